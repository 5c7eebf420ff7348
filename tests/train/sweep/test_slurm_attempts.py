"""Cluster-grade runs without a cluster: a requeued attempt of the same Slurm job resumes by itself (bit-equal),
nothing else is turned into a resume, a sweep job's failure is decided from its own attempt, named sweeps keep
one folder, and the Slurm launcher's names, per-rank logs and summary line. The real-cluster checks are in
test_slurm_cluster.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, RUN_PY, compose_config, run_config, run_env, run_py, tiny_job
from omegaconf import OmegaConf
from safetensors.torch import load_file

from lorazoo.train import errors as train_errors
from lorazoo.train.errors import RunDirError
from lorazoo.train.sweep.outcome import Outcome, failed_stage, summary
from lorazoo.train.sweep.slurm_attempt import is_requeued_attempt, record_attempt

TINY = tiny_job(
    48, 16, "trainer.batch_size=8", "trainer.max_steps=6", "trainer.save_steps=3", "trainer.warmup_ratio=0", "seed=3"
)
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT")


def slurm_job(monkeypatch: pytest.MonkeyPatch, job: str | None, restarts: int | None = None) -> None:
    for var in SLURM_VARS:
        monkeypatch.delenv(var, raising=False)
    if job is not None:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    if restarts is not None:
        monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))


# (job that worked in the dir, its restart count) -> (this process's job, restart count): resume?
ATTEMPT_CASES = [
    pytest.param(("77", None), ("77", 1), True, id="requeued-same-job"),
    pytest.param(("77", 1), ("77", 2), True, id="requeued-twice"),
    pytest.param(("77", None), ("78", None), False, id="new-job-is-a-fresh-launch"),
    pytest.param(("77", None), ("78", 1), False, id="requeued-other-job"),
    pytest.param(("77", None), ("77", None), False, id="second-launch-in-one-allocation"),
    pytest.param(("77", 1), ("77", 1), False, id="same-attempt-again"),
    pytest.param(("77", None), (None, None), False, id="outside-slurm"),
    pytest.param(None, ("77", 1), False, id="nothing-recorded"),
]


@pytest.mark.parametrize("recorded,current,resumes", ATTEMPT_CASES)
def test_only_a_later_attempt_of_the_same_job_resumes(tmp_path, monkeypatch, recorded, current, resumes):
    if recorded is not None:
        slurm_job(monkeypatch, *recorded)
        record_attempt(tmp_path)
    slurm_job(monkeypatch, *current)
    assert is_requeued_attempt(tmp_path) is resumes


def test_array_tasks_are_told_apart(tmp_path, monkeypatch):
    slurm_job(monkeypatch, "90")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "89")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    record_attempt(tmp_path)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert not is_requeued_attempt(tmp_path)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert is_requeued_attempt(tmp_path)


def train(out: Path, *extra: str) -> dict:
    return run_config(compose_config(*TINY, *extra), out)


def preempted_after_step_3(out: Path) -> None:
    """What a pre-empted attempt leaves: checkpoint-3, no later one, no adapter, a failed metrics.json."""
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")
    shutil.rmtree(out / "adapter")
    record = json.loads((out / "metrics.json").read_text())
    record.update(status="failed", reason="SystemExit", error="SystemExit: -1")
    (out / "metrics.json").write_text(json.dumps(record))


def adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter" / "adapter.safetensors"))


def test_a_requeued_attempt_resumes_bit_equal_and_a_new_launch_is_refused(tmp_path, monkeypatch):
    slurm_job(monkeypatch, None)
    reference = tmp_path / "reference"
    train(reference)
    job = tmp_path / "job"
    shutil.copytree(reference, job)  # the first attempt of job 77 trained the same way, then was pre-empted
    preempted_after_step_3(job)
    slurm_job(monkeypatch, "77")
    record_attempt(job)
    for other in (("78", None), ("77", None)):  # a new job; a second launch in the same allocation
        slurm_job(monkeypatch, *other)
        with pytest.raises(RunDirError, match="unfinished run"):
            train(job)
    slurm_job(monkeypatch, "77", 1)  # Slurm requeued job 77: no trainer.resume=true needed
    record = train(job)
    assert record["status"] == "completed" and record["steps"] == 6
    assert Path(record["train"]["resumed_from"]).name == "checkpoint-3"
    assert [(a["job"], a["restart_count"]) for a in record["attempts"]] == [("77", 0), ("77", 1)]
    want, got = adapter(reference), adapter(job)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


LORAZOO_ERRORS = [
    cls
    for cls in vars(train_errors).values()
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__.startswith("lorazoo")
]


@pytest.mark.parametrize("cls", LORAZOO_ERRORS, ids=lambda c: c.__name__)
def test_a_failure_is_a_training_failure_only_when_this_attempt_trained(cls):
    exc = cls("x")
    assert failed_stage(exc) == "setup"  # a refusal or a config/data error, whatever the class says
    exc._lorazoo_failed_stage = "training"
    assert failed_stage(exc) == "training"


def cli_env() -> dict[str, str]:
    """run.py's child environment outside any Slurm job, this checkout's src first on the path."""
    env = run_env(PYTHONPATH=str(REPO_ROOT / "src"))
    return {name: value for name, value in env.items() if name not in SLURM_VARS}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_py(*args, cwd=cwd, timeout=600, env=cli_env())


def test_a_refused_sweep_job_is_not_a_success_even_over_an_earlier_failed_record(tmp_path, monkeypatch):
    """A refusal over an earlier attempt's failed metrics.json is not a failed trial (that once exited 0):
    the refusal is this attempt's setup error: the sweep stops with exit 2."""
    slurm_job(monkeypatch, None)
    job = tmp_path / "sweep" / "job"
    train(job)
    preempted_after_step_3(job)
    done = cli("-m", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.sweep.subdir=job", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "unfinished run" in done.stderr
    assert json.loads((job / "metrics.json").read_text())["error"] == "SystemExit: -1"  # left as it was


def test_summary_names_each_failed_job_in_one_line():
    failed = {
        1: Outcome("failed", "setup", "optimizer.lr must be > 0, got -0.1", "/s/1_lr=-0.1"),
        3: Outcome("failed", "training", "non-finite loss", "/s/3"),
    }
    assert summary(4, failed) == (
        "2/4 completed; job 1 failed at setup: optimizer.lr must be > 0, got -0.1; /s/1_lr=-0.1; "
        "job 3 failed at training: non-finite loss; /s/3"
    )


def composed(*overrides: str):
    return compose_config(*overrides, hydra=True)


@pytest.mark.parametrize(
    "overrides,folder",
    [(["name=lr search"], "multirun/lr_search"), (["experiment=vblora_glue"], "multirun/vblora_glue")],
)
def test_a_named_sweep_keeps_one_folder(overrides, folder):
    assert composed(*overrides).hydra.sweep.dir == folder
    assert composed().hydra.sweep.dir.startswith("multirun/20")  # unnamed: Hydra's dated folder


def test_job_names_and_per_rank_logs():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from lorazoo.train.sweep.slurm_launcher import _rank_log, job_name

    cfg = composed("projection=vera", "task=glue/sst2", "seed=2", "hydra/launcher=submitit_slurm")
    assert job_name(cfg) == "lorazoo:vera-glue-sst2-s2"
    assert cfg.hydra.launcher._target_ == "hydra_plugins.lorazoo_plugins.SlurmLauncher"

    def filename():
        return OmegaConf.to_container(cfg.hydra.job_logging.handlers.file, resolve=False)["filename"]

    written = filename()
    _rank_log(cfg, 0, "/s/.submitit/12", "12")
    assert filename() == written  # rank 0 keeps Hydra's <job dir>/<job name>.log
    _rank_log(cfg, 1, "/s/.submitit/12", "12")
    assert filename() == "/s/.submitit/12/12_1_hydra.log"


@pytest.mark.slow
def test_an_optuna_study_killed_mid_way_runs_only_the_missing_trials(tmp_path):
    """The sweeper process dies after its first trial; relaunching the same command continues the SQLite study
    and runs only the trials still missing, with new lr values (a restarted seeded sampler would repeat them)."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'lr.db'}"
    args = [
        "-m",
        "hydra/sweeper=lr_lora",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *[a for a in TINY if not a.startswith(("trainer.max_steps", "trainer.save_steps"))],
        "trainer.max_steps=2",
    ]
    unnamed = cli(*args, cwd=tmp_path)
    assert unnamed.returncode != 0 and "study_name" in unnamed.stderr.splitlines()[-1]
    args.append("hydra.sweeper.study_name=lr_lora_tweets")
    first = subprocess.Popen([sys.executable, str(RUN_PY), *args], cwd=tmp_path, env=cli_env())

    def finished() -> list:
        try:
            study = optuna.load_study(study_name="lr_lora_tweets", storage=storage)
        except KeyError:
            return []
        return [t for t in study.trials if t.state.is_finished()]

    deadline = time.monotonic() + 300
    while not finished() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    first.kill()  # the sweeper process itself dies mid-study
    first.wait()
    before = len(finished())
    assert 1 <= before < 3
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    launched = [line for line in again.stdout.splitlines() + again.stderr.splitlines() if "\t#" in line]
    assert len(launched) == 3 - before, launched
    trials = finished()
    assert len(trials) == 3
    lrs = [t.params["optimizer.lr"] for t in trials]
    assert len(set(lrs)) == 3, lrs
