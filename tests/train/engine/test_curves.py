"""What a run records while it trains: curves.jsonl (continued, not duplicated, on resume), a train_loss over
the whole run, and the final and best evaluated steps (Trainer's load_best_model_at_end passed through)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import compose_config, train_killed_at_step, train_tiny
from safetensors.torch import load_file

from lorazoo.compare import compare, curve_settings
from lorazoo.compare import main as compare_main
from lorazoo.curves import mean_curve, plot_curves
from lorazoo.train.config.schema import check
from lorazoo.train.engine.best import best_metric_name
from lorazoo.train.engine.curves import CURVES_FILE, append_row, read_rows, run_train_loss
from lorazoo.train.errors import ConfigError
from lorazoo.train.options import TrainerOptions

SMALL = ["model=tiny_bert", "projection=lora", "task.max_train_samples=40", "task.max_eval_samples=16"]


def rows(run: Path) -> list[dict]:
    return read_rows(run / CURVES_FILE)


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter.safetensors"))


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two seeds, evaluated every 2 steps, logged every 10 (longer than the run): only the forced logs exist."""
    root = tmp_path_factory.mktemp("curves")
    for seed in (0, 1):
        train_tiny(
            root / f"s{seed}",
            *SMALL,
            f"seed={seed}",
            "trainer.max_steps=5",
            "trainer.save_steps=4",
            "trainer.logging_steps=10",
            "trainer.eval_strategy=steps",
            "trainer.eval_steps=2",
        )
    return [root / "s0", root / "s1"]


def test_every_run_writes_its_curve_with_every_step_covered(two_runs: list[Path]):
    for run in two_runs:
        record = json.loads((run / "metrics.json").read_text())
        lines = rows(run)
        train_rows = [r for r in lines if "loss" in r]
        # logged at the checkpoint (4) and at the last step (5), although logging_steps=10
        assert [(r["step"], r["steps"]) for r in train_rows] == [(4, 4), (5, 1)]
        assert all({"step", "epoch", "loss", "lr"} <= set(r) and r["lr"] is not None for r in train_rows)
        evals = [r for r in lines if "eval_loss" in r]
        assert [r["step"] for r in evals] == [2, 4, 5]  # every 2 steps, and the final evaluation
        assert all("eval_accuracy" in r and "epoch" in r for r in evals)
        assert record["train"]["train_loss"] == pytest.approx(run_train_loss(lines)[0], abs=1e-12)
        assert record["train"]["train_loss_steps"] == record["steps"] == 5


def test_compare_plots_the_curves_of_two_runs(two_runs: list[Path], tmp_path: Path):
    png = plot_curves({"lora": two_runs}, tmp_path / "direct.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "curves.png"
    assert compare_main([str(two_runs[0].parent), "--out", str(tmp_path / "res"), "--curves", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert plot_curves({"none": [tmp_path]}, tmp_path / "none.png") is None  # no curve: nothing drawn, no empty figure


def test_curves_draw_a_setting_per_colour_never_pooling_two(two_runs: list[Path], tmp_path: Path):
    """Drawn one colour a run, a study's 60 runs repeated colours and overflowed the legend. Grouped, the seeds of
    one setting share a colour and a bold mean, and a second setting of the same projection (another lr) is its
    own entry, as in the table: never averaged in with the first."""
    for run in two_runs:
        shutil.copytree(run, tmp_path / run.name)
    train_tiny(tmp_path / "other_lr", *SMALL, "seed=0", "trainer.max_steps=5", "optimizer.lr=0.02")
    result = compare([tmp_path], out=tmp_path / "res")
    settings = curve_settings(result["groups"], result["failed"])
    assert sorted(len(dirs) for dirs in settings.values()) == [1, 2]
    pooled = next(dirs for dirs in settings.values() if len(dirs) == 2)
    assert sorted(d.name for d in pooled) == ["s0", "s1"]
    assert all("optimizer.lr" in label for label in settings)  # the labels say which setting is which
    assert mean_curve([{1: 0.5, 2: 0.7, 3: 0.9}, {1: 0.7, 2: 0.9}]) == pytest.approx({1: 0.6, 2: 0.8})


def test_resumed_run_reports_the_whole_runs_train_loss_and_continues_its_curve(tmp_path: Path, monkeypatch):
    """Before: train_loss covered only the steps after the resume (seen: 0.980 vs 1.0026)."""
    args = [*SMALL, "trainer.max_steps=6", "trainer.save_steps=2", "trainer.logging_steps=10", "seed=5"]
    straight = train_tiny(tmp_path / "straight", *args)
    train_killed_at_step(monkeypatch, tmp_path / "resumed", 3, *args)
    append_row(tmp_path / "resumed" / CURVES_FILE, {"step": 3, "loss": 9.0, "steps": 1})  # work the resume redoes
    with (tmp_path / "resumed" / CURVES_FILE).open("a") as fh:
        fh.write('{"step": 3, "lo')  # a write torn by the kill
    resumed = train_tiny(tmp_path / "resumed", *args, "trainer.resume=true")

    assert resumed["train"]["resumed_from"].endswith("checkpoint-2")
    assert resumed["train"]["train_loss"] == pytest.approx(straight["train"]["train_loss"], rel=1e-9)
    assert resumed["train"]["train_loss_steps"] == 6
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")  # continued, not duplicated


def test_best_evaluated_step_is_kept_loaded_and_reported(tmp_path: Path):
    run = tmp_path / "best"
    record = train_tiny(
        run,
        *SMALL,
        "trainer.max_steps=5",
        "trainer.save_steps=1",
        "trainer.eval_strategy=steps",
        "trainer.eval_steps=1",
        "trainer.warmup_ratio=0",
        "optimizer.lr=0.05",
        "trainer.load_best_model_at_end=true",
        "trainer.metric_for_best_model=loss",
    )
    evals = {r["step"]: r["eval_loss"] for r in rows(run) if "eval_loss" in r}
    best_step = min(evals, key=lambda s: (evals[s], s))
    assert best_step < 5, "the case needs a best step before the last"
    seen = record["checkpoints"]
    assert seen["adapter_holds"] == "best" and seen["adapter_step"] == best_step
    assert seen["best"]["step"] == best_step and seen["best"]["loss"] == evals[best_step]
    assert seen["final"]["step"] == 5 and seen["final"]["loss"] == evals[5]
    assert record["metrics"]["loss"] == evals[best_step]  # the headline scores are the adapter's
    # the best checkpoint survived rotation (save_total_limit=2) and is what adapter/ holds
    kept = adapter(run / "checkpoints" / f"checkpoint-{best_step}")
    saved = adapter(run / "adapter")
    assert kept.keys() == saved.keys() and all(torch.equal(kept[k], saved[k]) for k in kept)
    last = adapter(run / "checkpoints" / "checkpoint-5")
    assert any(not torch.equal(last[k], saved[k]) for k in last)


def test_by_default_the_adapter_is_the_last_step_and_the_best_is_still_reported(two_runs: list[Path]):
    record = json.loads((two_runs[0] / "metrics.json").read_text())
    seen = record["checkpoints"]
    assert seen["metric_for_best_model"] == "accuracy" and seen["greater_is_better"] is True
    assert seen["adapter_holds"] == "final" and seen["adapter_step"] == 5 and seen["final"]["step"] == 5
    assert seen["best"]["step"] in (2, 4, 5)
    assert record["metrics"]["accuracy"] == seen["final"]["accuracy"]


def compose_trainer(*overrides: str) -> None:
    check(compose_config(*overrides))


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["trainer.load_best_model_at_end=true", "trainer.eval_strategy=no"], "trainer.eval_strategy"),
        (
            ["trainer.load_best_model_at_end=true", "trainer.eval_strategy=steps", "trainer.eval_steps=3"],
            "trainer.save_steps=500",
        ),
        (["trainer.load_best_model_at_end=yes please"], "trainer.load_best_model_at_end"),
        (["trainer.greater_is_better=3"], "trainer.greater_is_better"),
    ],
)
def test_best_model_options_that_cannot_be_honoured_are_one_line(overrides: list[str], named: str):
    with pytest.raises(ConfigError) as err:
        compose_trainer(*overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_best_model_options_are_accepted_keys():
    compose_trainer(
        "trainer.load_best_model_at_end=true",
        "trainer.metric_for_best_model=loss",
        "trainer.eval_strategy=steps",
        "trainer.eval_steps=2",
        "trainer.save_steps=4",
    )
    compose_trainer("trainer.greater_is_better=false", "trainer.save_total_limit=3")


@pytest.mark.parametrize(
    "given, keys, loss_only, expected",
    [
        (None, ["accuracy"], False, "accuracy"),
        (None, ["matthews_correlation", "accuracy"], False, "matthews_correlation"),
        (None, ["perplexity"], True, "loss"),  # causal LM: evaluation reports the loss only
        ("eval_accuracy", ["accuracy"], False, "accuracy"),
        ("loss", ["pearson", "spearmanr"], False, "loss"),
    ],
)
def test_metric_for_best_model_defaults_to_the_tasks_main_metric(given, keys, loss_only, expected):
    assert best_metric_name(TrainerOptions(metric_for_best_model=given), keys, loss_only) == expected


@pytest.mark.parametrize("given, keys, loss_only", [("acc", ["accuracy"], False), ("perplexity", ["perplexity"], True)])
def test_a_metric_evaluation_does_not_report_is_refused(given, keys, loss_only):
    with pytest.raises(ConfigError, match=rf"metric_for_best_model='{given}'.*valid"):
        best_metric_name(TrainerOptions(metric_for_best_model=given), keys, loss_only)


def test_best_by_epoch_saves_at_epoch_ends_and_the_curve_still_covers_every_step(tmp_path: Path):
    run = tmp_path / "epochs"
    record = train_tiny(
        run,
        *SMALL[:2],
        "task.max_train_samples=16",
        "task.max_eval_samples=16",
        "trainer.num_epochs=3",
        "trainer.logging_steps=10",
        "trainer.eval_strategy=epoch",
        "trainer.load_best_model_at_end=true",
        "trainer.save_total_limit=2",
    )
    assert record["steps"] == 6  # 16 examples, batch 8: 2 steps an epoch
    assert [(r["step"], r["steps"]) for r in rows(run) if "loss" in r] == [(2, 2), (4, 2), (6, 2)]
    assert record["train"]["train_loss_steps"] == 6
    seen = record["checkpoints"]
    assert seen["adapter_holds"] == "best" and seen["adapter_step"] == seen["best"]["step"] in (2, 4, 6)
    kept = adapter(run / "checkpoints" / f"checkpoint-{seen['best']['step']}")
    saved = adapter(run / "adapter")
    assert all(torch.equal(kept[k], saved[k]) for k in kept)
    assert record["metrics"]["accuracy"] == seen["best"]["accuracy"]
