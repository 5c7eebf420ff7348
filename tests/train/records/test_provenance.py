"""A run is reproducible from its directory: metrics.json names the code, libraries, data checksums, the single
job's command and CPU time; config_used.yaml (and .hydra/config.yaml) hold the fitted values; lorazoo-rerun
reruns it into a new directory and says whether the metrics match."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
import yaml
from helpers import REPO_ROOT, compose_config, run_env, run_py, snapshot, tiny_job

from lorazoo.rerun import differences
from lorazoo.train.records.provenance import job_command

# unilora: its default d (23,040) is fitted down to the tiny model's D
TINY = tiny_job(32, 16, "task=tweets", "trainer.max_steps=2", "trainer.batch_size=8", projection="unilora")


@pytest.mark.slow
def test_run_records_provenance_and_reruns_from_its_directory(tmp_path: Path):
    run_dir = tmp_path / "run"
    first = run_py(*TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    record = json.loads((run_dir / "metrics.json").read_text())

    # the config as used: the fitted d, in config_used.yaml and in Hydra's copy
    fitted = record["fitted_to_model"]["projection.kwargs.d"]
    assert fitted["from"] != fitted["to"]
    for path in (run_dir / "config_used.yaml", run_dir / ".hydra" / "config.yaml"):
        assert yaml.safe_load(path.read_text())["projection"]["kwargs"]["d"] == fitted["to"], path

    # code, libraries, data, command, CPU time
    assert record["lorazoo_version"]
    if (REPO_ROOT / ".git").exists():  # a checkout: its commit and dirty flag; an installed copy records null
        assert len(record["git"]["commit"]) == 40 and isinstance(record["git"]["dirty"], bool)
    else:
        assert record["git"] is None
    assert record["versions"]["transformers"] == transformers.__version__ and record["versions"]["torch"]
    ((path, digest),) = record["data_sha256"].items()
    assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest() and path.endswith(".csv")
    assert shlex.split(record["command"])[2:] == [*TINY, f"hydra.run.dir={run_dir}"]
    assert record["cpu_time_s"] > 0 and record["train"]["this_session_cpu_s"] == record["cpu_time_s"]
    assert record["eval_split"] == "dev"

    before = snapshot(run_dir)
    again = subprocess.run(
        [sys.executable, "-m", "lorazoo.rerun", str(run_dir), "--out", str(tmp_path / "again")],
        cwd=REPO_ROOT,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "MATCHES" in again.stdout
    rerun = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert rerun["metrics"] == record["metrics"] and rerun["data_sha256"] == record["data_sha256"]
    assert snapshot(run_dir) == before  # nothing of the original run changed

    refused = subprocess.run(
        [sys.executable, "-m", "lorazoo.rerun", str(tmp_path / "again"), "--out", str(run_dir)],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "is not empty" in refused.stderr


def test_rerun_refuses_what_it_cannot_rerun(tmp_path: Path):
    from lorazoo.rerun import main

    assert main([str(tmp_path)]) == 2  # no metrics.json
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "failed"}))
    assert main([str(tmp_path)]) == 2
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed", "command": "python run.py"}))
    assert main([str(tmp_path)]) == 2  # no config_used.yaml


@pytest.mark.parametrize(
    ("old", "new", "atol", "differ"),
    [
        ({"accuracy": 0.5}, {"accuracy": 0.5}, 0.0, []),
        ({"accuracy": 0.5}, {"accuracy": 0.5 + 1e-9}, 1e-6, []),
        ({"accuracy": 0.5}, {"accuracy": 0.51}, 1e-6, ["accuracy"]),
        ({"accuracy": 0.5, "loss": 1.0}, {"accuracy": 0.5}, 1e-6, ["loss"]),
    ],
)
def test_metric_differences(old: dict, new: dict, atol: float, differ: list[str]):
    assert [d[0] for d in differences(old, new, atol)] == differ


@pytest.mark.parametrize(
    ("argv", "overrides", "multirun", "expected"),
    [
        (["run.py", "seed=1", "hydra.run.dir=x"], ["seed=1"], False, "python run.py seed=1 hydra.run.dir=x"),
        (
            ["run.py", "-m", "seed=0,1", "projection=lora,vera", "hydra.sweep.subdir=s${seed}"],
            ["seed=1", "projection=vera"],
            True,
            "python run.py seed=1 projection=vera",
        ),
        (
            ["run.py", "--config-path", "/r/.hydra", "--config-name=config", "-m", "seed=0,1"],
            ["seed=0"],
            True,
            "python run.py --config-path /r/.hydra --config-name=config seed=0",
        ),
        (["run.py", "-m", "task.prompt=a b"], ["task.prompt=a b"], True, "python run.py 'task.prompt=a b'"),
    ],
)
def test_a_sweep_jobs_command_is_that_job_alone(argv: list[str], overrides: list[str], multirun: bool, expected: str):
    assert job_command(argv, overrides, multirun) == expected


def test_cpu_time_totals_every_part_of_a_resumed_run(tmp_path: Path):
    import shutil

    from lorazoo.train import run

    common = [o for o in TINY if not o.startswith(("projection=", "trainer.max_steps="))]
    common += ["projection=lora", "trainer.save_steps=2", "trainer.max_steps=4"]
    first = run(compose_config(*common), output_dir=tmp_path)
    cpu = json.loads((tmp_path / "cpu_time.json").read_text())
    assert set(cpu) == {"2", "4"} and 0 < cpu["2"] <= cpu["4"] <= first["cpu_time_s"] + 1e-3
    # as if killed after checkpoint-2
    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")
    shutil.rmtree(tmp_path / "adapter")
    (tmp_path / "metrics.json").unlink()
    cfg = compose_config(*common, "trainer.resume=true")
    second = run(cfg, output_dir=tmp_path)
    assert second["train"]["resumed_from"].endswith("checkpoint-2")
    assert second["cpu_time_s"] == pytest.approx(cpu["2"] + second["train"]["this_session_cpu_s"], abs=2e-3)
    (tmp_path / "cpu_time.json").unlink()  # a checkpoint without a CPU record: no total is claimed
    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")
    shutil.rmtree(tmp_path / "adapter")
    (tmp_path / "metrics.json").unlink()
    assert run(cfg, output_dir=tmp_path)["cpu_time_s"] is None
