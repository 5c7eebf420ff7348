"""`python run.py` processes sharing a directory, and sweeps that resume by training only their missing jobs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import RUN_PY, run_env, run_py, snapshot, tiny_job

JOB = tiny_job(16, 8, "task.max_length=32", "trainer.batch_size=8", "trainer.save_steps=1")


def test_two_runs_in_one_dir_at_once(tmp_path: Path):
    """The second run fails within seconds with one line; the first finishes and its files are its own."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            str(RUN_PY),
            *JOB,
            "trainer.max_steps=400",
            "trainer.save_steps=100",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (run_dir / "lorazoo_run.json").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = run_py(*JOB, "projection=vera", "trainer.max_steps=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        # it did not wait for the lock: the first run is still training when the second has already given up
        assert first.poll() is None, "the first run ended before the second was refused; the test proves nothing"
    finally:
        first.wait(timeout=400)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    last = [line for line in second.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: run dir ") and "is in use by another lorazoo run (pid " in last, second.stderr[
        -2000:
    ]
    assert first.returncode == 0, first.stderr.read()[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["projection"] == "lora" and record["steps"] == 400
    saved = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["config"]
    assert saved["projection"] == "lora"


def test_another_run_in_a_used_dir_leaves_it_byte_identical(tmp_path: Path):
    """Hydra's own .hydra/ files included: lorazoo writes them only once the dir is its own."""
    run_dir = tmp_path / "run"
    done = run_py(*JOB, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "overrides.yaml").is_file()
    before = snapshot(run_dir)
    for extra in (["projection=vera"], ["projection=vera", "trainer.resume=true"], ["projection.rank=2"]):
        out = run_py(*JOB, "trainer.max_steps=3", *extra, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        last = [line for line in out.stderr.splitlines() if line.strip()][-1]
        assert (
            out.returncode == 2
            and last.startswith("error: run dir ")
            and "holds another run (first differing key" in last
        )
        assert snapshot(run_dir) == before, extra


def test_relaunched_sweep_trains_only_missing_jobs(tmp_path: Path):
    """Re-launching a finished sweep trains nothing; deleting one job's dir retrains exactly that job."""
    sweep = tmp_path / "sweep"
    args = ["-m", *JOB, "trainer.max_steps=2", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    first = run_py(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    metrics = {job.name: (job / "metrics.json").read_bytes() for job in jobs}
    files = {job.name: snapshot(job) for job in jobs}

    again = run_py(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already completed") == 3 and "[lorazoo] tweets" not in again.stdout
    assert {job.name: snapshot(job) for job in jobs} == files  # nothing rewritten

    shutil.rmtree(jobs[1])
    third = run_py(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stderr.count("already completed") == 2 and third.stdout.count("[lorazoo] tweets") == 1
    retrained = json.loads((jobs[1] / "metrics.json").read_text())
    assert retrained["status"] == "completed" and retrained["seed"] == 1
    assert (jobs[1] / "metrics.json").read_bytes() != metrics[jobs[1].name]  # a new run (timings, wall time)
    for job in (jobs[0], jobs[2]):
        assert snapshot(job) == files[job.name]
