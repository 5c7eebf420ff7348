"""Run dirs and artifacts: "completed" holds only while the recorded artifacts are present and
match their sha256; a directory holding anything lorazoo did not write is not empty; the lock file is created
exclusively and never followed through a link; an export never lands in an adapter dir or a run dir.

Each refusal leaves every file exactly as it was (snapshots compared byte for byte)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import compose_config, snapshot, tiny_bert

from lorazoo import AdapterConfig, attach
from lorazoo.errors import AdapterFileError
from lorazoo.train import run
from lorazoo.train.options import to_plain
from lorazoo.train.records import run_dir
from lorazoo.train.records.checkpoints import mark_complete
from lorazoo.train.records.run_dir import LOCK_FILE, RunDirError, claim

RUN = [
    "logger=none",
    "model=tiny_bert",
    "projection=lora",
    "task.max_train_samples=16",
    "task.max_eval_samples=8",
    "trainer.max_steps=2",
    "seed=1",
]


def completed(out: Path, with_artifacts: bool = True) -> Path:
    """A run dir as a completed run of RUN leaves it (identity, adapter/, metrics.json with the hashes)."""
    held = claim(out, to_plain(compose_config(*RUN)), resume=False)
    held.record_identity()
    held.release()
    attach(tiny_bert(), AdapterConfig(projection="lora", rank=2)).save_adapter(out / "adapter")
    record = {"status": "completed", "fingerprint": held.fingerprint, "accuracy": 0.5}
    if with_artifacts:
        record["artifacts"] = hashes(out)
    (out / "metrics.json").write_text(json.dumps(record))
    return out


def hashes(out: Path) -> dict[str, str]:
    """The artifacts block of a completed metrics.json: sha256 of every file under adapter/."""
    files = sorted(p for p in (out / "adapter").rglob("*") if p.is_file())
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_a_finished_run_records_the_artifact_hashes(tmp_path: Path):
    out = completed(tmp_path / "run", with_artifacts=False)
    assert run_dir.artifact_hashes(out) == hashes(out) and len(hashes(out)) == 2


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


DAMAGE = {
    "adapter dir deleted": (lambda out: __import__("shutil").rmtree(out / "adapter"), "is missing"),
    "weights deleted": (lambda out: (out / "adapter" / "adapter.safetensors").unlink(), "is missing"),
    "config deleted": (lambda out: (out / "adapter" / "adapter_config.json").unlink(), "is missing"),
    "weights changed": (lambda out: flip_a_byte(out / "adapter" / "adapter.safetensors"), "changed since"),
    "config truncated": (lambda out: (out / "adapter" / "adapter_config.json").write_text("{"), "changed since"),
}


def test_completed_run_with_its_artifacts_is_reused(tmp_path: Path, monkeypatch):
    from lorazoo.train.stages import build

    out = completed(tmp_path / "run")
    before = snapshot(out)
    monkeypatch.setattr(build, "load_adapted_model", lambda *a, **k: pytest.fail("a finished job was retrained"))
    assert run(compose_config(*RUN), output_dir=out)["status"] == "completed"
    assert snapshot(out) == before


DAMAGE_CASES = [  # a record from before artifact hashes can only show missing files
    (damage, hashed)
    for damage in sorted(DAMAGE)
    for hashed in (True, False)
    if hashed or DAMAGE[damage][1] == "is missing"
]


@pytest.mark.parametrize("damage,with_artifacts", DAMAGE_CASES)
def test_completed_run_without_its_artifacts_is_not_reused(tmp_path: Path, damage: str, with_artifacts: bool):
    change, said = DAMAGE[damage]
    out = completed(tmp_path / "run", with_artifacts)
    change(out)
    before = snapshot(out)
    with pytest.raises(RunDirError, match=rf"holds a completed run of this config but not its artifacts \(.*{said}"):
        run(compose_config(*RUN), output_dir=out)
    assert snapshot(out) == before


def test_missing_artifacts_with_resume_continue_from_the_last_checkpoint(tmp_path: Path):
    out = completed(tmp_path / "run")
    (out / "adapter" / "adapter.safetensors").unlink()
    plain = to_plain(compose_config(*RUN))
    with pytest.raises(RunDirError, match="not its artifacts"):
        claim(out, plain, resume=True).release()  # no checkpoint to rebuild from
    checkpoint = out / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    mark_complete(checkpoint, 2, run_dir.fingerprint(run_dir.identity(plain)))
    with pytest.raises(RunDirError, match="add trainer.resume=true to rebuild them from its last checkpoint"):
        claim(out, plain, resume=False).release()
    held = claim(out, plain, resume=True)
    assert held.completed is None  # not "already completed": the job runs and rewrites its artifacts
    held.release()


# ============================================================================ foreign files
FOREIGN = {
    "another Hydra app": {".hydra/config.yaml": "db: mysql\n", "my_app.log": "[INFO] started\n"},
    "only .hydra": {".hydra/overrides.yaml": "[]\n"},
    "only a log": {"train.log": "epoch 1\n"},
    "a submitit folder": {".submitit/1/log.out": "x\n"},
    "a failed metrics.json of another tool": {"metrics.json": json.dumps({"status": "failed"})},
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_dir_with_files_lorazoo_did_not_write_is_refused(tmp_path: Path, case: str):
    for name, text in FOREIGN[case].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = snapshot(tmp_path)
    with pytest.raises(RunDirError, match=r"is not empty and holds no lorazoo run \(found \[") as exc:
        claim(tmp_path, {"a": 1}, resume=False).release()
    assert "\n" not in str(exc.value)
    assert snapshot(tmp_path) == before and not (tmp_path / LOCK_FILE).exists()


def test_this_jobs_own_hydra_log_is_not_foreign(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(run_dir, "_hydra_job_log", lambda: ["run.log"])
    (tmp_path / "run.log").write_text("")
    claim(tmp_path, {"a": 1}, resume=False).release()


# ============================================================================ the lock file
def plant_symlink(tmp_path: Path, outside: Path) -> Path:
    outside.write_text("precious\n")
    (tmp_path / "run").mkdir()
    os.symlink(outside, tmp_path / "run" / LOCK_FILE)
    return tmp_path / "run"


def plant_dangling(tmp_path: Path, outside: Path) -> Path:
    (tmp_path / "run").mkdir()
    os.symlink(outside, tmp_path / "run" / LOCK_FILE)
    return tmp_path / "run"


def plant_hardlink(tmp_path: Path, outside: Path) -> Path:
    outside.write_text("precious\n")
    (tmp_path / "run").mkdir()
    os.link(outside, tmp_path / "run" / LOCK_FILE)
    return tmp_path / "run"


def plant_fifo(tmp_path: Path, outside: Path) -> Path:
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / LOCK_FILE)
    return tmp_path / "run"


PLANTED = {
    "symlink": (plant_symlink, "is a symbolic link"),
    "dangling symlink": (plant_dangling, "is a symbolic link"),
    "hard link": (plant_hardlink, "is a file with 2 hard links"),
    "fifo": (plant_fifo, "is not a regular file"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_lock_file_is_never_followed(tmp_path: Path, case: str):
    plant, said = PLANTED[case]
    outside = tmp_path / "outside.txt"
    directory = plant(tmp_path, outside)
    existed = outside.exists()
    with pytest.raises(RunDirError, match=said) as exc:
        claim(directory, {"a": 1}, resume=False).release()
    assert "\n" not in str(exc.value)
    assert outside.exists() == existed and (not existed or outside.read_text() == "precious\n")


def test_lock_file_is_created_exclusively_and_reused(tmp_path: Path):
    claim(tmp_path, {"a": 1}, resume=False).release()
    assert (tmp_path / LOCK_FILE).is_file() and not (tmp_path / LOCK_FILE).is_symlink()
    claim(tmp_path, {"a": 1}, resume=False).release()  # our own lock file from before is fine


# ============================================================================ export targets
def exported_model():
    return attach(tiny_bert(), AdapterConfig(projection="lora", rank=2))


EXPORT_TARGETS = {
    "an adapter dir": lambda out: exported_model().save_adapter(out / "saved"),
    "a run dir": lambda out: completed(out / "run"),
    "a run dir's adapter/": lambda out: completed(out / "run") / "adapter",
    "a run dir's deleted adapter/": lambda out: (
        __import__("shutil").rmtree(completed(out / "run") / "adapter"),
        out / "run" / "adapter",
    )[1],
}


@pytest.mark.parametrize("target", sorted(EXPORT_TARGETS))
def test_export_into_an_adapter_or_run_dir_is_refused(tmp_path: Path, target: str):
    path = Path(EXPORT_TARGETS[target](tmp_path))
    before = snapshot(tmp_path)
    with pytest.raises(AdapterFileError, match=r"export target .* is a lorazoo (adapter|run) dir") as exc:
        exported_model().export_peft_lora(path)
    assert "\n" not in str(exc.value) and snapshot(tmp_path) == before


def test_export_into_a_new_dir_or_over_an_earlier_export_works(tmp_path: Path):
    model = exported_model()
    for _ in range(2):
        model.export_peft_lora(tmp_path / "peft")
    assert (tmp_path / "peft" / "adapter_model.safetensors").is_file()
