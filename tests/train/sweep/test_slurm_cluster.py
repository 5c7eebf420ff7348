"""Sweeps on a real one-node Slurm cluster (scripts/slurm_cluster.sh; .ci/run starts it): a pre-empted job
resumes by itself bit-equal to an uninterrupted one, a failing job is one line of the sweep's summary (exit 2)
while the other completes under its own name and the user's command, and a 2-task job is real DDP equal to
one process. Skipped, saying why, only where this machine cannot install or start Slurm."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.parallel import COMMON, NO_DROPOUT, assert_same_run, train_in_process
from safetensors.torch import load_file

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
LAUNCH = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
]
TINY = ["model=tiny_bert", "projection=lora", "task.max_eval_samples=16", "trainer.progress_bar=false", "logger=none"]


def _idle(env: dict[str, str]) -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return out.stdout.strip() == "idle"


@pytest.fixture(scope="module")
def slurm_env():
    """The environment that reaches the local cluster, starting it when needed (and stopping what it started,
    unless other pytest workers may still use it)."""
    conf = subprocess.run(["bash", str(SCRIPT), "conf"], capture_output=True, text=True, check=True).stdout.strip()
    env = {
        **os.environ,
        "SLURM_CONF": conf,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    started = False
    with open(f"{os.environ.get('TMPDIR', '/tmp')}/lorazoo-slurm-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one of them starts the cluster
        if not _idle(env):
            if os.geteuid() != 0 and not shutil.which("slurmctld"):
                pytest.skip("Slurm is not installed and installing it needs root (scripts/slurm_cluster.sh)")
            done = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
                pytest.skip(f"this machine cannot run a local Slurm cluster: {lines[-1]}")
            started = True
    yield env
    if started and "PYTEST_XDIST_WORKER" not in os.environ:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=300)


def test_the_cluster_offers_every_core_of_the_machine(slurm_env):
    """The node's CPUs are the machine's, even when the cluster was started under OMP_NUM_THREADS=1 (the test
    suite's setting, which ``nproc`` obeys): a one-CPU node leaves a two-task job pending forever."""
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], env=slurm_env, capture_output=True, text=True, timeout=20)
    assert int(out.stdout.split()[0]) == len(os.sched_getaffinity(0))


def sweep(env: dict[str, str], cwd: Path, *args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), "-m", *LAUNCH, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # a hung sweep must not outlive the test
        raise
    return proc.returncode, out, err


def slurm(env: dict[str, str], *args: str) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def metrics(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def wait_for(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_preempted_job_resumes_by_itself_bit_equal(slurm_env, tmp_path):
    """Two identical jobs (they differ only in the unfingerprinted name); one gets scancel -s USR2 after its
    first checkpoint: submitit requeues it, the next attempt resumes, and the sweep completes with exit 0."""
    # a tiny step takes ~10 ms: the run must outlast the first checkpoint by far more than the 0.5 s poll plus
    # scancel, or the signal lands after training ended (seen at 40 steps: the job finished, then died of USR2)
    steps = [
        "task.max_train_samples=64",
        "trainer.batch_size=8",
        "trainer.max_steps=1500",
        "trainer.save_steps=50",
        "trainer.save_total_limit=2",
    ]
    proc = sweep(
        slurm_env,
        tmp_path,
        *TINY,
        *steps,
        "name=plain,preempted",
        f"hydra.sweep.dir={tmp_path}/s",
        "hydra.sweep.subdir=${name}",
    )
    victim = tmp_path / "s" / "preempted"

    def first_checkpoint() -> list[Path]:
        if proc.poll() is not None:  # the sweep ended before the job could be pre-empted
            raise AssertionError(finish(proc)[2][-3000:])
        return list((victim / "checkpoints").glob("checkpoint-*/checkpoint_complete"))

    wait_for(first_checkpoint, "a first checkpoint")
    job = json.loads((victim / "slurm_attempts.json").read_text())["attempts"][-1]["job"]
    slurm(slurm_env, "scancel", "-s", "USR2", job)
    # Slurm holds a requeued job back ~2 minutes (BeginTime); release it at once to keep the test short
    wait_for(lambda: "PENDING" in slurm(slurm_env, "squeue", "-h", "-j", job, "-o", "%T"), "the requeue")
    slurm(slurm_env, "scontrol", "update", f"JobId={job}", "StartTime=now")
    code, out, err = finish(proc)
    assert code == 0, err[-3000:]
    record = metrics(victim)
    assert record["status"] == "completed" and record["steps"] == 1500
    assert [a["restart_count"] for a in record["attempts"]] == [0, 1]
    assert record["train"]["resumed_from"]
    plain, resumed = (load_file(str(d / "adapter" / "adapter.safetensors")) for d in (tmp_path / "s" / "plain", victim))
    assert plain.keys() == resumed.keys()
    for key in plain:
        assert torch.equal(plain[key], resumed[key]), key


def test_a_failing_job_is_one_line_and_the_other_keeps_its_name_and_command(slurm_env, tmp_path):
    steps = ["task.max_train_samples=32", "trainer.batch_size=8", "trainer.max_steps=2"]
    code, out, err = finish(
        sweep(slurm_env, tmp_path, *TINY, *steps, "optimizer.lr=1e-3,-0.1", f"hydra.sweep.dir={tmp_path}/s")
    )
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 1/2 completed; job 1 failed at setup: "), err[-3000:]
    assert "-0.1" in errors[0] and str(tmp_path / "s" / "1_") in errors[0]
    good = next((tmp_path / "s").glob("0_*"))
    record = metrics(good)
    assert record["status"] == "completed"
    assert "_submit.py" not in record["command"] and "run.py" in record["command"]
    assert "optimizer.lr=0.001" in record["command"] or "optimizer.lr=1e-3" in record["command"]
    job = record["attempts"][0]["job"]
    name = slurm(slurm_env, "sacct", "-n", "-X", "-j", job, "-o", "JobName%60").strip()
    assert name == "lorazoo:lora-tweets-s0"


def test_a_two_task_job_is_ddp_equal_to_one_process(slurm_env, tmp_path):
    case = ["model=tiny_bert", "projection=lora", "task.max_train_samples=48", "task.max_eval_samples=16", *NO_DROPOUT]
    train_in_process(tmp_path / "one", *case, "trainer.batch_size=8")
    code, out, err = finish(
        sweep(
            slurm_env,
            tmp_path,
            *COMMON,
            *case,
            "trainer.batch_size=4",
            "hydra.launcher.tasks_per_node=2",
            f"hydra.sweep.dir={tmp_path}/s",
            "hydra.sweep.subdir=job",
        )
    )
    assert code == 0, err[-3000:]
    job = tmp_path / "s" / "job"
    assert metrics(job)["world_size"] == 2
    assert_same_run(tmp_path / "one", job)
    submitit = next(p for p in (tmp_path / "s" / ".submitit").iterdir() if p.is_dir())
    assert list(submitit.glob("*_1_hydra.log")), sorted(p.name for p in submitit.iterdir())  # each rank its own log
