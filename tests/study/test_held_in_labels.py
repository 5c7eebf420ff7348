"""Honest labels: a score on a split carved from train is called held-in wherever it is printed or recorded, and
every task picks ``task.max_eval_samples`` the same stated way (a random N by task.split_seed, in file order)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import compose_config

from lorazoo.study import fair
from lorazoo.train import build_task, run

TINY = [
    "logger=none",
    "model=tiny_bert",
    "projection=lora",
    "projection.rank=4",
    "trainer.batch_size=8",
    "trainer.progress_bar=false",
    "trainer.max_steps=1",
    "task.max_train_samples=32",
    "task.max_eval_samples=16",
]


@pytest.mark.parametrize("holdout", [None, 12])
def test_held_in_scores_are_labelled_so_in_the_summary_and_record(tmp_path: Path, capsys, holdout: int | None):
    extra = [f"task.holdout_dev={holdout}"] if holdout else []
    run(compose_config(*TINY, *extra), output_dir=tmp_path)
    record = json.loads((tmp_path / "metrics.json").read_text())
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[lorazoo] tweets")][-1]
    if holdout:
        assert record["eval_split"].startswith("held-in (12 examples carved from train")
        assert "held-in (12 examples" in summary and " dev accuracy" not in summary
    else:
        assert record["eval_split"] == "dev" and ": dev accuracy=" in summary


def test_fair_compare_records_the_search_score_as_held_in(tmp_path: Path):
    root = tmp_path / "tweets" / "lora"
    (root / "search").mkdir(parents=True)
    (root / "search" / "optimization_results.yaml").write_text(
        yaml.safe_dump({"best_params": {"optimizer.lr": 0.004}, "best_value": 0.81})
    )
    done = root / "final" / "seed_0"
    done.mkdir(parents=True)  # the final seed already completed: nothing is launched
    (done / "metrics.json").write_text(
        json.dumps(
            {
                "status": "completed",
                "seed": 0,
                "overrides": ["projection=lora", "task=tweets", "optimizer.lr=0.004", "seed=0", "trainer.resume=True"],
            }
        )
    )
    assert (
        fair.main(
            ["--task", "tweets", "--projections", "lora", "--seeds", "0", "--holdout", "50", "--out", str(tmp_path)]
        )
        == 0
    )
    tuning = json.loads((root / "final" / "tuning.json").read_text())
    assert tuning["best_value"] == 0.81 and tuning["best_value_scored_on"].startswith("held-in: 50 examples")


# ----------------------------------------------------------------------------- max_eval_samples, every task
def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _glue(tmp: Path) -> list[str]:
    data = tmp / "SST-2"
    data.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        rows = [f"{name} sentence {i}\t{i % 2}" for i in range(40)]
        (data / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return ["task=glue/sst2", f"task.data_dir={data}"]


def _gsm8k(tmp: Path) -> list[str]:
    rows = [{"question": f"What is {i} + {i}?", "answer": f"{i} + {i} = {2 * i}\n#### {2 * i}"} for i in range(40)]
    for split in ("train", "test"):
        _write_jsonl(tmp / f"{split}.jsonl", rows)
    return ["task=math/gsm8k", f"task.data_dir={tmp}"]


def _alpaca(tmp: Path) -> list[str]:
    rows = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(80)]
    data = tmp / "alpaca.json"
    data.write_text(json.dumps(rows))
    return ["task=instruct/alpaca", f"task.data_file={data}", "task.eval_size=40"]


def _text_classify(tmp: Path) -> list[str]:
    data = _write_jsonl(tmp / "d.jsonl", [{"text": f"text {i}", "label": i % 3} for i in range(40)])
    return ["task=text/classify", f"task.data_file={data}", f"task.eval_file={data}"]


def _text_generate(tmp: Path) -> list[str]:
    data = _write_jsonl(tmp / "d.jsonl", [{"prompt": f"p {i}", "target": f"t {i}"} for i in range(40)])
    return ["task=text/generate", f"task.data_file={data}", f"task.eval_file={data}"]


TASKS = {
    "tweets": lambda tmp: ["task=tweets"],
    "glue/sst2": _glue,
    "math/gsm8k": _gsm8k,
    "instruct/alpaca": _alpaca,
    "text/classify": _text_classify,
    "text/generate": _text_generate,
}


def _scored(overrides: list[str], seed: int, n: int | None) -> tuple[list, str]:
    cfg = compose_config(*overrides, f"task.max_eval_samples={'null' if n is None else n}")
    task = build_task(cfg.task, seed)
    task.load()
    rows = getattr(task, "eval_rows", None) or task.eval_pairs
    return [repr(r) for r in rows], task.eval_selection()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_picks_max_eval_samples_the_same_stated_way(tmp_path: Path, name: str):
    overrides = TASKS[name](tmp_path)
    full, every = _scored(overrides, 0, None)
    picked, stated = _scored(overrides, 0, 5)
    assert every == "every example of the evaluation set"
    assert stated.startswith("a random 5 of the evaluation set") and "task.split_seed=0" in stated
    assert len(picked) == 5 and picked != full[:5]  # not the first N
    positions = [full.index(r) for r in picked]
    assert positions == sorted(positions)  # file order kept
    assert _scored(overrides, 7, 5)[0] == picked  # the training seed does not move it
    assert _scored([*overrides, "task.split_seed=3"], 0, 5)[0] != picked  # task.split_seed does
