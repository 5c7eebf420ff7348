"""The Hydra entry point behind ``python run.py``: compose configs/, run one job, report errors in one line.

``lorazoo.train.run(cfg)`` does the work; this module only adds Hydra (config search path, multirun,
launchers) and the error policy: a LoraZooError prints ``error: <message>`` and exits 2, unless
HYDRA_FULL_ERROR=1 asks for the traceback.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from .errors import LoraZooError
from .train.config_store import register_projection_options
from .train.naming import register_resolvers
from .train.sweep_outcome import failed_stage, note_failure


def config_dir() -> str:
    """configs/ beside run.py (any cwd), else the repository checkout this package lives in."""
    candidates = [Path(sys.argv[0]).resolve().parent / "configs", Path(__file__).resolve().parents[2] / "configs"]
    if os.environ.get("LORAZOO_CONFIG_DIR"):
        candidates.insert(0, Path(os.environ["LORAZOO_CONFIG_DIR"]))
    for path in candidates:
        if (path / "config.yaml").is_file():
            return str(path)
    return str(candidates[-1])


CONFIG_DIR = config_dir()
register_resolvers()  # ${lorazoo_slug:...} in configs/config.yaml (flat sweep job dirs)
register_projection_options(CONFIG_DIR)  # projection/<name>, lr_<name>, option defaults: from the projection files
# our joblib.yaml spells out every key of the plugin's schema of the same name; Hydra warns about the match
# (the message starts with a newline, so the pattern must let '.' match it: (?s))
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep the progress bars and our own lines readable


MAX_OVERRIDE_DEPTH = 32


def check_argv(argv: list[str]) -> None:
    """Refuse what Hydra's override parser cannot report in one line: a value nested so deep that the
    parser's recursion overflows (a traceback wall). Runs before Hydra sees the command line."""
    from .jsonsafe import nesting_depth

    for arg in argv:
        depth = nesting_depth(arg.replace("'", '"'))
        if depth > MAX_OVERRIDE_DEPTH:
            shown = arg if len(arg) <= 40 else arg[:37] + "..."
            print(
                f"error: override {shown!r} is nested {depth} levels deep; valid: at most {MAX_OVERRIDE_DEPTH}",
                file=sys.stderr,
            )
            sys.exit(2)


def _ranks_share_one_run_dir(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
    """Under torchrun/accelerate every rank runs this CLI: ranks > 0 get a scratch Hydra dir (run() then
    uses rank 0's), so one launch makes one run directory."""

    @functools.wraps(hydra_main)
    def launch(*args: Any, **kwargs: Any) -> Any:
        from .train.distributed import follower_overrides

        sys.argv[1:] = follower_overrides(sys.argv[1:])
        return hydra_main(*args, **kwargs)

    return launch


@_ranks_share_one_run_dir
@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Train + evaluate one job (one per multirun job); writes metrics.json and adapter/ in the job dir.

    Returns the sweep objective (the task's main metric, larger is better; see train/objective.py), or
    None when a multirun job's training failed, which hydra-optuna-sweeper records as a failed trial.
    """
    try:
        _quiet_libraries()
        from .train import run
        from .train.objective import main_metric, objective

        record = run(cfg)
        return objective(record, main_metric(cfg.task, int(cfg.seed)))
    except LoraZooError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        note_failure(exc)  # for the Slurm launcher's per-job summary (train/sweep_outcome.py)
        if _training_failed_in_sweep(exc):
            return None  # this job failed; the other jobs of the sweep go on
        sys.exit(2)


def _training_failed_in_sweep(exc: BaseException) -> bool:
    """A multirun job whose training started and failed in this attempt: one failed trial. Decided from the
    exception this attempt raised, never from a metrics.json an earlier attempt left. Errors before training
    (bad config, missing data, a refused run dir) still stop the whole sweep: every job would hit them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or str(HydraConfig.get().mode) != "RunMode.MULTIRUN":
        return False
    return failed_stage(exc) == "training"


def main() -> None:
    """``python run.py ...``: Hydra's main, plus the valid spellings when Hydra rejects a key."""
    check_argv(sys.argv[1:])
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code == 1:
            from .cli_hints import unknown_key_hint

            hint = unknown_key_hint(sys.argv[1:], CONFIG_DIR)
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
