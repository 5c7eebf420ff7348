"""Two-process runs (torchrun, gloo, CPU) and the checks that they equal one process at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers.paths import REPO_ROOT
from helpers.runs import compose_config, run_config, run_env

HELPERS = Path(__file__).resolve().parent
DISTRIBUTED_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
NO_DROPOUT = ["+model.dims.hidden_dropout_prob=0", "+model.dims.attention_probs_dropout_prob=0"]  # masks are per rank
COMMON = [
    "logger=none",
    "trainer.logging_steps=1",
    "trainer.progress_bar=false",
    "trainer.max_steps=3",
    "trainer.save_steps=3",
    "trainer.eval_batch_size=4",
    "trainer.warmup_ratio=0",
    "seed=3",
]


def torchrun_two(
    script: Path, *args: str, cwd: Path | None = None, timeout: float = 500
) -> subprocess.CompletedProcess:
    """``script *args`` under torchrun on 2 local processes, this checkout's src first on the path and no rank
    inherited from the calling process."""
    env = run_env(PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    for var in DISTRIBUTED_VARS:
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args]
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def train_in_process(out: Path, *overrides: str) -> dict:
    """The one-process reference run (``COMMON`` then ``overrides``); returns its metrics.json."""
    return run_config(compose_config(*COMMON, *overrides), out)


def step_losses(run_dir: Path) -> list[float]:
    state = json.loads((run_dir / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def assert_same_run(one: Path, two: Path) -> None:
    """Run dir ``two`` (2 processes) trained what ``one`` (1 process) did: losses, metrics and adapter."""
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["status"] == b["status"] == "completed"
    assert step_losses(one) == pytest.approx(step_losses(two), abs=1e-5)
    assert a["train"]["train_loss"] == pytest.approx(b["train"]["train_loss"], abs=1e-5)
    assert a["metrics"]["loss"] == pytest.approx(b["metrics"]["loss"], abs=1e-5)
    ta, tb = (load_file(str(d / "adapter" / "adapter.safetensors")) for d in (one, two))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.allclose(ta[key], tb[key], atol=1e-5, rtol=0), key
