"""Slurm presets: they compose against the installed hydra-submitit-launcher schema, and a job whose
Slurm tasks are ranks (SLURM_PROCID/NTASKS/LOCALID, node list → MASTER_ADDR) runs real DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import compose_config
from helpers.parallel import COMMON, NO_DROPOUT, assert_same_run, train_in_process
from omegaconf import OmegaConf

from lorazoo.train.engine.distributed import adopt_slurm_environment

REPO = Path(__file__).resolve().parents[3]
PRESETS = ["submitit_slurm", "submitit_slurm_multigpu"]


def launcher(option: str, *overrides: str):
    return compose_config(f"hydra/launcher={option}", *overrides, hydra=True).hydra.launcher


@pytest.mark.parametrize("option", PRESETS)
def test_presets_fit_the_installed_plugin_schema(option: str):
    config = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")
    node = OmegaConf.to_container(launcher(option), resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(config.SlurmQueueConf), node)  # an unknown key raises here
    assert merged._target_.endswith("SlurmLauncher")


def test_one_gpu_per_job_and_one_process_per_gpu():
    single = launcher("submitit_slurm")
    assert (single.gpus_per_node, single.tasks_per_node, single.nodes) == (1, 1, 1)
    multi = launcher("submitit_slurm_multigpu", "hydra.launcher.gpus_per_node=8", "hydra.launcher.nodes=2")
    assert (multi.gpus_per_node, multi.tasks_per_node, multi.nodes) == (8, 8, 2)
    assert multi.partition is None and multi.setup is None  # the rest comes from the single-GPU preset


SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_JOB_NODELIST": "localhost",
}


def test_slurm_tasks_become_ranks(monkeypatch):
    pytest.importorskip("submitit")
    for var in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SUBMITIT_EXECUTOR",
    ):
        monkeypatch.delenv(var, raising=False)
    for key, value in {**SLURM_TASK, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(key, value)
    assert adopt_slurm_environment()
    env = os.environ
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == ("1", "2", "1", "localhost")
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000
    port = env["MASTER_PORT"]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("MASTER_PORT")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    for var in ("WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(var)
    adopt_slurm_environment()
    assert os.environ["MASTER_PORT"] == port and os.environ["RANK"] == "0"  # every task derives the same port


def test_a_single_task_or_a_torchrun_inside_slurm_is_left_alone(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.delenv("RANK", raising=False)
    assert not adopt_slurm_environment()
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("RANK", "3")  # torchrun already set the ranks
    assert not adopt_slurm_environment()


@pytest.mark.slow
def test_two_slurm_tasks_train_like_one_process(tmp_path: Path):
    """The job function (run.py's Hydra task) under a simulated two-task Slurm job on CPU."""
    pytest.importorskip("submitit")
    case = ["model=tiny_bert", "projection=lora", "task.max_train_samples=48", "task.max_eval_samples=16", *NO_DROPOUT]
    train_in_process(tmp_path / "one", *case, "trainer.batch_size=8")
    args = [*COMMON, *case]
    job = tmp_path / "job"  # submitit gives every task of a job the same Hydra job dir
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    base.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        **SLURM_TASK,
    )
    tasks = [
        subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), *args, "trainer.batch_size=4", f"hydra.run.dir={job}"],
            env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    outputs = [t.communicate(timeout=500) for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert json.loads((job / "metrics.json").read_text())["world_size"] == 2
    assert_same_run(tmp_path / "one", job)
