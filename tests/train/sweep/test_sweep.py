"""The sweep objective and Hydra's Optuna sweeper: run.py returns the task's main metric, a failed trial is
recorded as failed (the sweep goes on), and a preset run prints a best value."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, compose_config, run_env, run_py, tiny_job
from omegaconf import OmegaConf

from lorazoo import projection_names
from lorazoo.train.sweep.objective import objective
from lorazoo.train.tasks import build_task
from lorazoo.train.tasks.meaning import MetricMeaningError

TINY_SWEEP = tiny_job(32, 16, "trainer.max_steps=4", "trainer.batch_size=8")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """run.py with this checkout's src first on the path (a worktree's code, not the installed one)."""
    return run_py(*args, cwd=cwd, timeout=600, env=run_env(PYTHONPATH=str(REPO_ROOT / "src")))


def task_node(task: str):
    return compose_config(f"task={task}").task


@pytest.mark.parametrize(
    "task,metric,sign",
    [
        ("tweets", "accuracy", 1),
        ("glue/cola", "matthews_correlation", 1),
        ("glue/stsb", "pearson", 1),
        ("glue/mrpc", "accuracy", 1),
        ("math/gsm8k", "exact_match", 1),
        ("instruct/alpaca", "perplexity", -1),
        ("text/generate", "perplexity", -1),
    ],
)
def test_record_without_a_meaning_uses_its_tasks_declaration(task: str, metric: str, sign: int):
    """A record from before lorazoo wrote main_metric/greater_is_better: the task built from the run's config."""
    record = {"status": "completed", metric: 0.5, "metrics": {metric: 0.5, "loss": 0.25, "f1": 0.75}}
    assert objective(record, task_node(task)) == sign * 0.5


def test_objective_orients_and_fails():
    assert objective({"status": "completed", "accuracy": 0.75, **greater_first("accuracy")}) == 0.75
    assert objective({"status": "completed", "perplexity": 12.5, **lower_first("perplexity")}) == -12.5  # maximised
    assert objective({"status": "completed", "metrics": {"pearson": 0.5}, **greater_first("pearson")}) == 0.5
    for bad in (
        {"status": "failed", "accuracy": 0.9},
        {"status": "running"},
        None,
        {"status": "completed", "accuracy": float("nan"), **greater_first("accuracy")},
        {"status": "completed", **greater_first("accuracy")},
    ):
        assert objective(bad) is None  # the sweeper records None as a failed trial


def greater_first(metric: str) -> dict:
    return {"main_metric": metric, "greater_is_better": True}


def lower_first(metric: str) -> dict:
    return {"main_metric": metric, "greater_is_better": False}


@pytest.mark.parametrize("metric", ["perplexity", "word_error_rate", "loss"])
def test_objective_takes_the_direction_the_record_states(metric: str):
    """Lower is better because the record says so, whatever the metric's name; the record wins over the task."""
    low, high = ({"status": "completed", metric: v, **lower_first(metric)} for v in (2.0, 3.0))
    assert objective(low, task_node("tweets")) > objective(high, task_node("tweets"))
    assert objective({"status": "completed", metric: 2.0, **greater_first(metric)}) == 2.0


def test_lower_is_better_task_prefers_the_lower_perplexity():
    """instruct/alpaca declares perplexity, lower first: the sweep maximises the objective, so 8 beats 9."""
    node = task_node("instruct/alpaca")
    meaning = build_task(node, 0).metric_meaning()
    better, worse = ({"status": "completed", "perplexity": v, **meaning} for v in (8.0, 9.0))
    assert objective(better, node) > objective(worse, node)
    assert objective({"status": "completed", "perplexity": 8.0}, node) == objective(better, node)


@pytest.mark.parametrize(
    "record,message",
    [
        ({"output_dir": "/runs/r1"}, "/runs/r1/metrics.json: the record has no main_metric/greater_is_better"),
        (
            {**greater_first("accuracy"), "greater_is_better": "false"},
            "greater_is_better='false' is not a metric meaning",
        ),
        ({"main_metric": "accuracy"}, "greater_is_better=None is not a metric meaning"),
        ({"greater_is_better": True}, "main_metric=None, greater_is_better=True is not a metric meaning"),
    ],
)
def test_record_without_a_usable_meaning_is_a_one_line_error(record: dict, message: str):
    with pytest.raises(MetricMeaningError) as caught:
        objective({"status": "completed", "accuracy": 0.5, **record})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_record_whose_task_config_no_longer_builds_is_a_one_line_error():
    with pytest.raises(MetricMeaningError, match=r"task config does not build .*unknown key\(s\) \['retired'\]"):
        objective({"status": "completed", "accuracy": 0.5}, {"name": "tweets", "retired": 1})


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
    cfg = compose_config(f"hydra/sweeper=lr_{projection}", f"projection={projection}", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.n_trials > 0 and sweeper.sampler.seed == 0
    assert sweeper.max_failure_rate == 1.0  # a failed trial is a FAIL, never the end of the sweep
    assert sweeper.params, "the preset searches nothing"
    for key, spec in sweeper.params.items():
        value = OmegaConf.select(cfg, key, default=None)
        assert isinstance(value, float), f"{key} is not a float lr of projection={projection}"
        lo, hi = _interval(spec)
        assert lo == pytest.approx(value / 10) and hi == pytest.approx(value * 100), (key, spec, value)
