"""The Hydra entry point behind ``python run.py``: compose configs/, run one job, report errors in one line.

``lorazoo.train.run(cfg)`` does the work; this module only adds Hydra (config search path, multirun,
launchers) and the error policy: a LoraZooError prints ``error: <message>`` and exits 2, unless
HYDRA_FULL_ERROR=1 asks for the traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .errors import LoraZooError


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
# our joblib.yaml spells out every key of the plugin's schema of the same name; Hydra warns about the match
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema.*")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep the progress bars and our own lines readable


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train + evaluate one job (one per multirun job); writes metrics.json and adapter/ in the job dir."""
    try:
        _quiet_libraries()
        from .train import run

        run(cfg)
    except LoraZooError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
