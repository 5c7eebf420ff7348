"""The record a run writes in stages: the task's metric meaning (main metric, direction) in metrics.json, the
job identity one way for a failed and a completed record, and the summary line read from the record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import compose_config, train_tiny

from lorazoo.train import build_task
from lorazoo.train.stages.record import early_record, print_summary


def _pairs(folder: Path) -> Path:
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Repeat word{i}.", "target": f"word{i}"}) + "\n" for i in range(20)))
    return path


# one task of each type: a classification head, and a causal LM scored by perplexity (lower is better)
RUNS = {
    "classification": ["model=tiny_bert", "task=tweets", "task.max_train_samples=16", "task.max_eval_samples=16"],
    "causal": ["model=tiny_llama", "task=text/generate", "task.data_file=PAIRS", "task.max_length=32"],
}


@pytest.mark.parametrize("kind", sorted(RUNS))
def test_record_holds_the_tasks_metric_meaning_and_the_summary_reads_it(tmp_path: Path, capsys, kind: str):
    overrides = [o.replace("PAIRS", str(_pairs(tmp_path))) for o in RUNS[kind]]
    overrides += ["projection=lora", "projection.rank=2", "trainer.max_steps=1"]
    record = train_tiny(tmp_path / "run", *overrides)
    task = build_task(compose_config(*overrides).task, seed=0)
    meaning = task.metric_meaning()
    assert record["status"] == "completed"
    assert {k: record[k] for k in ("main_metric", "greater_is_better")} == meaning
    assert isinstance(record[meaning["main_metric"]], float)  # the main metric is a top-level score
    direction = "higher" if meaning["greater_is_better"] else "lower"
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"[lorazoo] {task.name}")]
    assert f" dev {meaning['main_metric']}={record[meaning['main_metric']]:.4f} ({direction} is better)" in summary[-1]
    # a setup failure's record names the job the same way as the completed one
    early = early_record(compose_config(*overrides), {}, tmp_path / "run")
    assert early == {k: record[k] for k in early}


SUMMARY = {"task": "t", "projection": "lora", "model": "m", "seed": 0, "trainable": 8, "D": 8, "steps": 1}


@pytest.mark.parametrize(
    "meaning,scores,shown",
    [
        ({"main_metric": "bleu", "greater_is_better": True}, {"bleu": 0.25}, "bleu=0.2500 (higher is better)"),
        ({"main_metric": "wer", "greater_is_better": False}, {"wer": 0.5}, "wer=0.5000 (lower is better)"),
        # a task with no score of its own ranks by the evaluation loss, which only metrics.json's metrics hold
        ({"main_metric": "loss", "greater_is_better": False}, {}, "loss=1.5000 (lower is better)"),
    ],
)
def test_summary_shows_whichever_main_metric_the_record_names(tmp_path: Path, capsys, meaning, scores, shown):
    record = {**SUMMARY, **meaning, **scores, "metrics": {"loss": 1.5, **scores}, "wall_time_s": 1.0}
    print_summary({**record, "accuracy": 0.75}, tmp_path)  # a score the record does not name as main stays out
    line = capsys.readouterr().out.strip()
    assert f": dev {shown} | trainable 8 of D 8" in line and "accuracy" not in line


def test_trainer_ranks_checkpoints_by_the_direction_the_task_declares(tmp_path: Path, monkeypatch):
    """Trainer's best step follows the task's declared direction, not its name rule (which would call any
    score not ending in "loss" higher-is-better): a task declaring accuracy lower-first is ranked lower-first."""
    from lorazoo.train.tasks.base import Task

    monkeypatch.setattr(Task, "metric_meaning", lambda self: {"main_metric": "accuracy", "greater_is_better": False})
    record = train_tiny(tmp_path / "run", *RUNS["classification"], "projection=lora", "trainer.max_steps=1")
    assert record["checkpoints"]["metric_for_best_model"] == "accuracy"
    assert record["checkpoints"]["greater_is_better"] is False
