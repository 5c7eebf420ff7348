"""The Hydra entry point behind ``python run.py``: compose configs/, run one job, report errors in one line.

``lorazoo.train.run(cfg)`` does the work; this module only adds Hydra (config search path, multirun,
launchers) and the error policy: a LoraZooError or an OSError, wherever Hydra or the job raises it, prints
one ``error: <message>`` line and exits 2, unless LORAZOO_DEBUG=1 (or HYDRA_FULL_ERROR=1) asks for the
traceback; a group option that does not exist is one line listing the valid ones, before Hydra composes.
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

from lorazoo.errors import LoraZooError
from lorazoo.train.config.store import register_projection_options
from lorazoo.train.records.naming import register_resolvers
from lorazoo.train.sweep.outcome import failed_stage, note_failure


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
    from lorazoo.jsonsafe import nesting_depth

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
        from lorazoo.train.engine.distributed import follower_overrides

        sys.argv[1:] = follower_overrides(sys.argv[1:])
        return hydra_main(*args, **kwargs)

    return launch


@_ranks_share_one_run_dir
@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """Train + evaluate one job (one per multirun job); writes metrics.json and adapter/ in the job dir.

    Returns the sweep objective (the task's main metric, larger is better; see train/sweep/objective.py), or
    None when a multirun job's training failed, which hydra-optuna-sweeper records as a failed trial.
    """
    try:
        _quiet_libraries()
        from lorazoo.train import run
        from lorazoo.train.sweep.objective import objective

        record = run(cfg)
        return objective(record, cfg.task)
    except (LoraZooError, OSError) as exc:
        if _debugging():
            raise
        print(error_line(exc), file=sys.stderr)
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


def _debugging() -> bool:
    """LORAZOO_DEBUG=1 (or Hydra's own HYDRA_FULL_ERROR=1): show the full traceback instead of one line."""
    return os.environ.get("LORAZOO_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def error_line(exc: BaseException) -> str:
    """The one ``error:`` line for a LoraZooError (its message) or an OSError (what failed, where, what to do)."""
    if isinstance(exc, LoraZooError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}; free space or fix permissions there, or pick another hydra.run.dir"
    return "error: " + " ".join(text.split())


def _one_line_errors() -> None:
    """Route everything Hydra runs (composing, making the run dir, the job, the launcher) through one handler:
    a LoraZooError or OSError is one ``error:`` line and exit code 2; anything else is Hydra's own report."""
    import hydra._internal.utils as hydra_utils

    report = hydra_utils.run_and_report
    if getattr(report, "_lorazoo", False):
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except (LoraZooError, OSError) as exc:
                if _debugging():
                    raise
                print(error_line(exc), file=sys.stderr)
                sys.exit(2)

        return report(guarded)

    run_and_report._lorazoo = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def main() -> None:
    """``python run.py ...``: Hydra's main, plus the valid spellings when Hydra rejects a key or a group option."""
    check_argv(sys.argv[1:])
    from lorazoo.cli_hints import check_group_choices

    bad_choice = check_group_choices(sys.argv[1:], CONFIG_DIR)
    if bad_choice:
        print(bad_choice, file=sys.stderr)
        sys.exit(2)
    if os.environ.get("LORAZOO_DEBUG") == "1":
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's own handler then re-raises with the whole trace
    _one_line_errors()
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code == 1:
            from lorazoo.cli_hints import unknown_key_hint

            hint = unknown_key_hint(sys.argv[1:], CONFIG_DIR)
            if hint:
                print(hint, file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
