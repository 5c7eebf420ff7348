"""The sweep objective and Hydra's Optuna sweeper: run.py returns the task's main metric, a failed trial is
recorded as failed (the sweep goes on), and a preset run prints a best value."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lorazoo import projection_names
from lorazoo.cli import CONFIG_DIR
from lorazoo.train.sweep.objective import main_metric, objective

REPO = Path(__file__).resolve().parents[3]
TINY_SWEEP = [
    "model=tiny_bert",
    "projection=lora",
    "task.max_train_samples=32",
    "task.max_eval_samples=16",
    "trainer.max_steps=4",
    "trainer.batch_size=8",
    "trainer.progress_bar=false",
    "logger=none",
]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.parametrize(
    "task,metric",
    [
        ("tweets", "accuracy"),
        ("glue/cola", "matthews_correlation"),
        ("glue/stsb", "pearson"),
        ("glue/mrpc", "accuracy"),
        ("math/gsm8k", "exact_match"),
        ("instruct/alpaca", "perplexity"),
    ],
)
def test_main_metric_per_task(task: str, metric: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}"])
    assert main_metric(cfg.task) == metric


def test_objective_orients_and_fails():
    assert objective({"status": "completed", "accuracy": 0.75}, "accuracy") == 0.75
    assert objective({"status": "completed", "perplexity": 12.5}, "perplexity") == -12.5  # maximised
    assert objective({"status": "completed", "metrics": {"pearson": 0.5}}, "pearson") == 0.5
    for bad in (
        {"status": "failed", "accuracy": 0.9},
        {"status": "running"},
        None,
        {"status": "completed", "accuracy": float("nan")},
        {"status": "completed"},
    ):
        assert objective(bad, "accuracy") is None  # the sweeper records None as a failed trial


@pytest.mark.slow
def test_optuna_preset_prints_best_value(tmp_path: Path):
    sweep = tmp_path / "sweep"
    out = cli(
        "-m", "hydra/sweeper=lr_lora", *TINY_SWEEP, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Best value:" in out.stdout + out.stderr
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(records) == 3 and all(r["status"] == "completed" for r in records)
    assert result["best_value"] == max(r["accuracy"] for r in records)
    lrs = [r["overrides"] for r in records]
    assert len({o for run in lrs for o in run if o.startswith("optimizer.lr=")}) == 3  # three sampled lrs


@pytest.mark.slow
def test_failed_trial_is_failed_not_a_crash(tmp_path: Path):
    """lr = 1e20 diverges (NaN stop): that trial fails, the other completes, the sweep reports a best value.
    The preset's seeded TPE draws 1e20 first, then 1e-3, from this two-value space."""
    sweep = tmp_path / "sweep"
    out = cli(
        "-m",
        "hydra/sweeper=lr_lora",
        *TINY_SWEEP,
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=choice(0.001,1e20)",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    assert "Failed experiment" in log and "Best value:" in log
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert sorted(r["status"] for r in records) == ["completed", "failed"]
    assert [r["overrides"] for r in records if r["status"] == "failed"][0].count("optimizer.lr=1e+20") == 1
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_params"]["optimizer.lr"] == pytest.approx(1e-3)


def _interval(spec: str) -> tuple[float, float]:
    match = re.fullmatch(r"tag\(log, interval\(([^,]+), ([^)]+)\)\)", spec)
    assert match, f"{spec!r} is not a log-uniform interval"
    return float(match.group(1)), float(match.group(2))


@pytest.mark.parametrize("projection", projection_names())
def test_every_projection_has_an_lr_preset_around_its_lr(projection: str):
    """lr_<projection> searches every lr key it names, log-uniform from 1/10 to 100 × the configured value."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config", overrides=[f"hydra/sweeper=lr_{projection}", f"projection={projection}"], return_hydra_config=True
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.n_trials > 0 and sweeper.sampler.seed == 0
    assert sweeper.max_failure_rate == 1.0  # a failed trial is a FAIL, never the end of the sweep
    assert sweeper.params, "the preset searches nothing"
    for key, spec in sweeper.params.items():
        value = OmegaConf.select(cfg, key, default=None)
        assert isinstance(value, float), f"{key} is not a float lr of projection={projection}"
        lo, hi = _interval(spec)
        assert lo == pytest.approx(value / 10) and hi == pytest.approx(value * 100), (key, spec, value)
