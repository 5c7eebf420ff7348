"""Composing run.py's Hydra config and running tiny jobs, in process or as a real ``python run.py`` child."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from helpers.paths import RUN_PY

# what every tiny test run shares: no logger, no progress bar, a log line per step, batches that fit tiny splits
QUIET = ["logger=none", "trainer.progress_bar=false"]
TINY = [*QUIET, "trainer.batch_size=8", "trainer.eval_batch_size=16", "trainer.logging_steps=1"]


def tiny_job(train: int, evaluate: int, *extra: str, projection: str = "lora") -> list[str]:
    """Overrides of a quick quiet tiny_bert job: ``projection`` on ``train`` training and ``evaluate`` dev
    examples of the default task, then ``extra``."""
    sizes = [f"task.max_train_samples={train}", f"task.max_eval_samples={evaluate}"]
    return [*QUIET, "model=tiny_bert", f"projection={projection}", *sizes, *extra]


def compose_config(*overrides: str, hydra: bool = False) -> Any:
    """run.py's config with ``overrides`` applied, as Hydra composes it (``hydra=True`` keeps the hydra node)."""
    from hydra import compose, initialize_config_dir

    from lorazoo.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def run_config(cfg: Any, out: Path) -> dict:
    """``lorazoo.train.run`` into ``out`` on one torch thread, as the subprocess runs (OMP_NUM_THREADS=1): the
    same bits, and no spinning threads on a busy machine; returns the metrics.json it wrote."""
    from lorazoo.train import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, output_dir=out)
    finally:
        torch.set_num_threads(threads)
    return json.loads((Path(out) / "metrics.json").read_text())


def train_tiny(out: Path, *overrides: str) -> dict:
    """One in-process tiny run (``TINY`` then ``overrides``) into ``out``; returns its metrics.json."""
    return run_config(compose_config(*TINY, *overrides), out)


def run_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python run.py`` child: offline, no W&B, one thread, Hydra's short error form, and
    W&B's console lines decided by ``logger.verbose`` alone."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **extra,
    }
    for name in ("HYDRA_FULL_ERROR", "WANDB_SILENT"):
        env.pop(name, None)
    return env


def run_py(
    *args: str, cwd: Path, timeout: float = 400, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python run.py *args`` as a child process in ``cwd``, its output captured as text."""
    return subprocess.run(
        [sys.executable, str(RUN_PY), *args],
        cwd=cwd,
        env=run_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes (to prove an earlier run's files unchanged)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing after the raise runs (not an Exception, so nothing catches it)."""


def train_killed_at_step(monkeypatch: Any, out: Path, step: int, *overrides: str) -> None:
    """A tiny run into ``out`` killed as it starts optimizer step ``step`` (checkpoints before it stay)."""
    import pytest

    from lorazoo.train.engine.trainer import LoraZooTrainer

    original = LoraZooTrainer.training_step

    def dies(self: Any, *a: Any, **k: Any) -> Any:
        if self.state.global_step == step:
            raise Killed()
        return original(self, *a, **k)

    monkeypatch.setattr(LoraZooTrainer, "training_step", dies)
    with pytest.raises(Killed):
        train_tiny(out, *overrides)
    monkeypatch.setattr(LoraZooTrainer, "training_step", original)


def group_options(group: str) -> list[str]:
    """Every option of run.py's config group ``group``, as the CLI's hints list them (sub-folders included)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lorazoo.cli import CONFIG_DIR
    from lorazoo.cli_hints import _options

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return _options(GlobalHydra.instance().config_loader(), group)
