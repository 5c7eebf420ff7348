"""Runs you can trust: run dirs never mix, resume continues only the run that wrote the dir,
foreign files are never deleted, bad data / diverged runs / NaN metrics are never reported as results.

Every fault test snapshots the earlier run's files and checks they are byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config, snapshot, train_tiny

from lorazoo import LoraZooError
from lorazoo.train.records.checkpoints import (
    COMPLETE_MARKER,
    WRITING_MARKER,
    complete_checkpoints,
    resume_point,
    rotate,
)
from lorazoo.train.records.run_dir import UNFINGERPRINTED, RunDirError, claim, fingerprint, identity

RUN = [
    "model=tiny_bert",
    "projection=unilora",
    "projection.kwargs.d=64",
    "task.max_train_samples=48",
    "task.max_eval_samples=16",
    "task.max_length=32",
    "trainer.max_steps=4",
    "trainer.save_steps=2",
    "seed=1",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One completed tiny run with two checkpoints (steps 2 and 4)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    record = train_tiny(out, *RUN)
    assert record["status"] == "completed" and record["steps"] == 4
    assert [p.name for p in complete_checkpoints(out / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    return out


@pytest.fixture
def earlier(finished: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, as a user's earlier run dir."""
    copy = tmp_path / "earlier"
    shutil.copytree(finished, copy)
    return copy


def unfinished(run_dir: Path) -> Path:
    """The earlier run as if killed after its last checkpoint (no final metrics.json / adapter)."""
    (run_dir / "metrics.json").unlink()
    shutil.rmtree(run_dir / "adapter")
    return run_dir


# ============================================================================ run identity
def test_fingerprint_ignores_only_logging_and_budget_keys():
    base = identity(json.loads(json.dumps(_plain(*RUN))))
    assert fingerprint(base) == fingerprint(
        identity(_plain(*RUN, "trainer.logging_steps=5", "logger=wandb", "trainer.save_steps=1", "trainer.resume=true"))
    )
    for change in (
        "projection.rank=8",
        "seed=2",
        "trainer.max_steps=5",
        "projection.kwargs.d=32",
        "model.target_modules=[query]",
        "task.max_train_samples=40",
    ):
        assert fingerprint(identity(_plain(*RUN, change))) != fingerprint(base), change
    assert "lorazoo.generator_version" in base and not any(k.startswith(("logger.", "trainer.resume")) for k in base)
    assert "trainer.logging_steps" in UNFINGERPRINTED


def _plain(*overrides: str) -> dict:
    from lorazoo.train.options import to_plain

    return to_plain(compose_config(*TINY, *overrides))


@pytest.mark.parametrize("resume", [False, True])
def test_run_dir_of_another_run_is_refused(earlier: Path, resume: bool):
    """Another projection in a used dir: refused before training, naming the key; the old run is untouched."""
    before = snapshot(earlier)
    other = [o for o in RUN if not o.startswith("projection")] + ["projection=lora"]
    with pytest.raises(
        RunDirError, match=r"holds another run \(first differing key projection\.name: 'unilora' → 'lora'"
    ):
        train_tiny(earlier, *other, f"trainer.resume={str(resume).lower()}")
    assert snapshot(earlier) == before


@pytest.mark.parametrize(
    "change,key",
    [
        ("projection.rank=8", "projection.rank"),
        ("seed=3", "seed"),
        ("model.target_modules=[query]", "model.target_modules"),
        ("projection.kwargs.share=local", "projection.kwargs.share"),
        ("projection.kwargs.d=32", "projection.kwargs.d"),
        ("projection=vera", "projection.name"),
    ],
)
def test_resume_with_a_changed_setting_is_refused(earlier: Path, change: str, key: str):
    run_dir = unfinished(earlier)
    before = snapshot(run_dir)
    overrides = [o for o in RUN if not (change.startswith("projection=") and o.startswith("projection."))]
    with pytest.raises(RunDirError, match=rf"first differing key {key.replace('.', '[.]')}:"):
        train_tiny(run_dir, *overrides, change, "trainer.resume=true")
    assert snapshot(run_dir) == before


def test_foreign_non_empty_dir_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("my thesis, do not touch\n")
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=r"is not empty and holds no lorazoo run \(found \['notes.txt'\]\)"):
        train_tiny(tmp_path, *RUN)
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_unfinished_run_needs_resume_true(earlier: Path):
    run_dir = unfinished(earlier)
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="holds an unfinished run of this config; add trainer.resume=true"):
        train_tiny(run_dir, *RUN)
    assert snapshot(run_dir) == before


def test_completed_run_of_the_same_config_is_reused(earlier: Path, monkeypatch):
    """Resumable sweeps: the same config finished here already → its record comes back, nothing is trained."""
    from lorazoo.train.stages import build

    before = snapshot(earlier)
    monkeypatch.setattr(build, "load_adapted_model", lambda *a, **k: pytest.fail("a finished job was retrained"))
    record = train_tiny(earlier, *RUN, "trainer.logging_steps=2")  # a logging key does not make it another run
    assert record == json.loads((earlier / "metrics.json").read_text()) and record["status"] == "completed"
    assert snapshot(earlier) == before


def test_second_concurrent_run_in_the_same_dir_fails_at_once(tmp_path: Path):
    held = claim(tmp_path, _plain(*RUN), resume=False)
    try:
        started = time.perf_counter()
        with pytest.raises(RunDirError, match=r"is in use by another lorazoo run \(pid \d+"):
            train_tiny(tmp_path, *RUN)
        assert time.perf_counter() - started < 5
    finally:
        held.release()
    claim(tmp_path, _plain(*RUN), resume=False).release()  # free again once released


# ============================================================================ checkpoints
def test_foreign_checkpoint_is_never_deleted(earlier: Path, capsys):
    """A checkpoint-N folder lorazoo did not write (a plain HF checkpoint) survives resume and rotation."""
    checkpoints = unfinished(earlier) / "checkpoints"
    foreign = checkpoints / "checkpoint-1"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"somebody else's weights")
    interrupted = checkpoints / "checkpoint-3"
    interrupted.mkdir()
    (interrupted / WRITING_MARKER).write_text("{}\n")
    before = snapshot(foreign)
    record = train_tiny(earlier, *RUN, "trainer.resume=true")
    assert record["status"] == "completed" and record["train"]["resumed_from"].endswith("checkpoint-4")
    assert "checkpoint-1 has no lorazoo checkpoint mark: left alone" in capsys.readouterr().err
    assert snapshot(foreign) == before and not interrupted.exists()
    rotate(checkpoints, keep=1)
    assert snapshot(foreign) == before and [p.name for p in complete_checkpoints(checkpoints)] == ["checkpoint-4"]


def test_resume_from_the_final_checkpoint_takes_no_extra_step(earlier: Path, finished: Path):
    """Killed after its last checkpoint: resume evaluates that checkpoint; Trainer alone would step past max_steps."""
    from safetensors.torch import load_file

    record = train_tiny(unfinished(earlier), *RUN, "trainer.resume=true")
    assert record["status"] == "completed" and record["steps"] == 4
    assert [p.name for p in complete_checkpoints(earlier / "checkpoints")] == ["checkpoint-2", "checkpoint-4"]
    reference = json.loads((finished / "metrics.json").read_text())
    assert record["metrics"]["accuracy"] == reference["metrics"]["accuracy"]
    a, b = (
        load_file(str(earlier / "adapter" / "adapter.safetensors")),
        load_file(str(finished / "adapter" / "adapter.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_newest_checkpoint_without_adapter_falls_back(earlier: Path, capsys):
    checkpoints = unfinished(earlier) / "checkpoints"
    (checkpoints / "checkpoint-4" / "adapter.safetensors").unlink()
    record = train_tiny(earlier, *RUN, "trainer.resume=true")
    err = capsys.readouterr().err
    assert "falling back to checkpoint-2: checkpoint-4 is unreadable" in err and "adapter.safetensors" in err
    assert record["status"] == "completed" and record["train"]["resumed_from"].endswith("checkpoint-2")
    assert record["steps"] == 4


def test_checkpoint_of_another_adapter_is_refused(earlier: Path):
    """Second line of defence (a checkpoint copied in by hand): its adapter config must equal this run's."""
    checkpoints = unfinished(earlier) / "checkpoints"
    config = json.loads((checkpoints / "checkpoint-4" / "adapter_config.json").read_text())["config"]
    fp = json.loads((checkpoints / "checkpoint-4" / COMPLETE_MARKER).read_text())["fingerprint"]
    before = snapshot(checkpoints)
    with pytest.raises(RunDirError, match=r"checkpoint-4' belongs to another run \(rank: 4 → 8"):
        resume_point(checkpoints, fp, {**config, "rank": 8})
    assert snapshot(checkpoints) == before
    assert resume_point(checkpoints, fp, config).endswith("checkpoint-4")


def test_errors_are_lorazoo_errors():
    assert issubclass(RunDirError, LoraZooError)


# ============================================================================ divergence and NaN metrics
DIVERGING = [
    "model=tiny_bert",
    "projection=lora",
    "optimizer.lr=10",
    "optimizer.groups.head.lr=10",
    "trainer.max_grad_norm=1e9",
    "trainer.warmup_ratio=0",
    "task.max_train_samples=160",
    "task.max_eval_samples=16",
    "task.max_length=32",
    "trainer.max_steps=20",
    "trainer.save_steps=1",
    "seed=0",
]


def test_diverged_run_is_failed_and_keeps_the_last_good_checkpoint(tmp_path: Path):
    """lr = 10 on the head: loss 1.1 → 30; reported `failed: diverged`, never `completed`."""
    from lorazoo.train.engine.divergence import DivergedError

    with pytest.raises(
        DivergedError, match=r"^diverged: smoothed train loss .* > 4 × initial 1\.09\d* for 3 logging steps"
    ):
        train_tiny(tmp_path, *DIVERGING)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "diverged"
    assert [p.name for p in complete_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-1"]  # before the blow-up
    assert not (tmp_path / "adapter").exists()


def test_divergence_factor_and_patience_are_options():
    from types import SimpleNamespace

    from lorazoo.train.engine.divergence import DivergedError, DivergenceStop

    def feed(stop: DivergenceStop, losses: list[float]) -> list[bool]:
        saves = []
        for step, loss in enumerate(losses, 1):
            control = SimpleNamespace(should_save=True)
            stop.on_log(None, SimpleNamespace(global_step=step), control, logs={"loss": loss})
            saves.append(control.should_save)
        return saves

    rising = [1.0, 1.0, 9.0, 9.0, 9.0, 9.0]  # smoothed: 1, 1, 5, 7, 8, 8.5
    with pytest.raises(DivergedError, match="for 3 logging steps .step 5"):
        feed(DivergenceStop(4.0, 3, lambda: "x"), rising)
    assert feed(DivergenceStop(4.0, 5, lambda: "x"), rising) == [True, True, False, False, False, False]
    assert feed(DivergenceStop(9.0, 1, lambda: "x"), rising) == [True] * 6  # k = 9: never above
    assert feed(DivergenceStop(None, 1, lambda: "x"), [1.0, 100.0]) == [True, True]  # null: off
    with pytest.raises(LoraZooError, match="trainer.divergence_patience=0 is invalid"):
        cfg_check("trainer.divergence_patience=0")
    with pytest.raises(LoraZooError, match="trainer.divergence_factor=0.5 is invalid; valid: a finite number > 1"):
        cfg_check("trainer.divergence_factor=0.5")


def cfg_check(*overrides: str) -> None:
    from lorazoo.train.options import TrainerOptions, from_node

    from_node(TrainerOptions, compose_config(*TINY, *overrides).trainer, "trainer config")


def test_non_finite_final_metric_fails_the_run(tmp_path: Path, monkeypatch):
    from lorazoo.train.errors import NonFiniteMetricError
    from lorazoo.train.tasks.classification import ClassificationTask

    monkeypatch.setattr(ClassificationTask, "compute_metrics", lambda self, pred: {"accuracy": float("nan")})
    with pytest.raises(NonFiniteMetricError, match=r"non-finite final metric\(s\) \{'accuracy': nan\}"):
        train_tiny(tmp_path, *RUN)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and record["reason"] == "non-finite metric" and "accuracy" not in record


def test_scratch_of_a_killed_write_is_removed_when_the_run_resumes(tmp_path: Path):
    """A SIGKILL between atomic_write's write and rename leaves ``.<name>.<random>.tmp``; the owner removes it."""
    from lorazoo.train.records import run_dir

    (tmp_path / "adapter").mkdir()
    for name in (".train_time.json.x1y2.tmp", "adapter/.adapter.safetensors.z3.tmp"):
        (tmp_path / name).write_text("partial")
    (tmp_path / "notes.tmp").write_text("not ours: no leading dot")
    held = run_dir.Claim(tmp_path, "fp", {})
    assert held.sweep_scratch() == [".train_time.json.x1y2.tmp", "adapter/.adapter.safetensors.z3.tmp"]
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == ["notes.tmp"]
