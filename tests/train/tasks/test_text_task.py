"""Your own data without code (task=text/classify, text/generate from CSV/TSV/JSONL/JSON with named columns),
and CONTRIBUTING's add-a-task example run exactly as written."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import compose_config
from omegaconf import OmegaConf

from lorazoo.errors import ConfigError
from lorazoo.train import build_task, run
from lorazoo.train.errors import DataFormatError

REPO = Path(__file__).resolve().parents[3]
TINY = [
    "logger=none",
    "projection=lora",
    "projection.rank=4",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "trainer.progress_bar=false",
    "trainer.max_steps=2",
]
FORMATS = ("csv", "tsv", "jsonl", "json")


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` in the format the suffix names (the columns are the first row's keys)."""
    fmt = path.suffix[1:]
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


def reviews(n: int = 40, labels: tuple = ("pos", "neg")) -> list[dict]:
    return [
        {"review": f"review number {i}, quite {'bad' if i % 2 else 'good'}", "stars": labels[i % 2]} for i in range(n)
    ]


def task_for(*overrides: str):
    return build_task(compose_config("task=text/classify", *overrides).task, 0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_classification_from_each_format_infers_and_prints_labels(tmp_path: Path, fmt: str, capsys):
    data = write(tmp_path / f"reviews.{fmt}", reviews())
    task = task_for(f"task.data_file={data}", "task.text_column=review", "task.label_column=stars")
    assert task.num_labels == 2 and task.label_names == ("neg", "pos")  # sorted
    assert "labels inferred" in capsys.readouterr().err
    task.load()
    assert len(task.train_rows) == 36 and len(task.eval_rows) == 4
    for text, pair, label in task.train_rows + task.eval_rows:
        assert pair is None and task.label_names[label] == ("pos" if "good" in text else "neg")


def test_given_labels_set_the_ids_and_numbers_sort_by_value(tmp_path: Path):
    data = write(tmp_path / "r.csv", reviews(labels=("pos", "neg")))
    given = task_for(
        f"task.data_file={data}", "task.text_column=review", "task.label_column=stars", "task.labels=[pos,neg]"
    )
    assert given.label_names == ("pos", "neg")
    numbers = write(tmp_path / "n.jsonl", [{"text": f"t{i}", "label": [2, 10, 1][i % 3]} for i in range(30)])
    assert task_for(f"task.data_file={numbers}").label_names == ("1", "2", "10")


def test_regression_and_a_separate_eval_file(tmp_path: Path):
    rows = [{"a": f"first {i}", "b": f"second {i}", "score": i / 10} for i in range(20)]
    train, dev = write(tmp_path / "train.csv", rows), write(tmp_path / "dev.jsonl", rows[:5])
    task = task_for(
        f"task.data_file={train}",
        f"task.eval_file={dev}",
        "task.text_column=a",
        "task.text_pair_column=b",
        "task.label_column=score",
        "task.regression=true",
    )
    task.load()
    assert task.num_labels == 1 and task.metric_keys() == ["pearson", "spearmanr"]
    assert len(task.train_rows) == 20 and task.eval_rows[2] == ("first 2", "second 2", 0.2)


# (file rows, overrides, expected message part, line): every data problem names file:line
BAD = {
    "missing column": ([{"text": "a", "lab": "x"}] * 3, [], "['label']", 1),
    "empty text": ([{"text": "a", "label": "x"}, {"text": " ", "label": "y"}], [], "non-empty text", 3),
    "unknown given label": (
        [{"text": "a", "label": "x"}, {"text": "b", "label": "z"}],
        ["task.labels=[x,y]"],
        "'z'",
        3,
    ),
    "one label only": ([{"text": "a", "label": "x"}] * 4, [], "holds one label", None),
    "regression not a number": (
        [{"text": "a", "label": "1.5"}, {"text": "b", "label": "high"}],
        ["task.regression=true"],
        "not a finite number",
        3,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_data_errors_name_file_and_line(tmp_path: Path, case: str, fmt: str):
    rows, overrides, part, line = BAD[case]
    data = write(tmp_path / f"d.{fmt}", rows)
    with pytest.raises(DataFormatError) as error:
        task = task_for(f"task.data_file={data}", "task.eval_file=" + str(data), *overrides)
        task.load()
    message = str(error.value)
    assert part in message and "\n" not in message
    if line is not None:  # csv line numbers count the header; jsonl's first record is line 1
        assert f"{data}:{line if fmt == 'csv' or line == 1 else line - 1}:" in message


def test_eval_label_unseen_in_train_names_its_line(tmp_path: Path):
    train = write(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    dev = write(tmp_path / "dev.csv", [{"text": "a", "label": "x"}, {"text": "c", "label": "w"}])
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(dev))}:3: label 'w' is not one of \['x', 'y'\]"):
        task_for(f"task.data_file={train}", f"task.eval_file={dev}").load()


@pytest.mark.parametrize("setting", ["task.data_file=null", "task.data_dir=/somewhere"])
def test_text_task_needs_a_data_file(tmp_path: Path, setting: str):
    with pytest.raises(ConfigError, match="task.data_file"):
        task_for(setting).load()


def test_classify_trains_end_to_end(tmp_path: Path):
    data = write(tmp_path / "reviews.csv", reviews())
    cfg = compose_config(
        *TINY, "model=tiny_bert", "task=text/classify", f"task.data_file={data}", "task.text_column=review"
    )
    cfg.task.label_column = "stars"
    run(cfg, output_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["label_names"] == ["neg", "pos"] and 0 <= record["accuracy"] <= 1
    assert list(record["data_sha256"]) == [str(data.resolve())]


def test_generate_trains_end_to_end(tmp_path: Path):
    rows = [{"question": f"Repeat word{i}.", "answer": f"word{i}"} for i in range(20)]
    data = write(tmp_path / "pairs.jsonl", rows)
    cfg = compose_config(
        *TINY,
        "task=text/generate",
        "model=tiny_llama",
        f"task.data_file={data}",
        "task.prompt_column=question",
        "task.target_column=answer",
        "task.max_length=32",
    )
    run(cfg, output_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["perplexity"] > 1 and record["eval_examples"] == 2


# ----------------------------------------------------------------------------- CONTRIBUTING, as written
def contributing_blocks() -> tuple[str, str]:
    """The add-a-task section's python and yaml examples (the yaml indented as a list item)."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    section = text.split("## Adding a task", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    return python, "\n".join(line[2:] if line.startswith("  ") else line for line in block.splitlines())


def test_contributing_task_example_runs_as_written(tmp_path: Path):
    python, config = contributing_blocks()
    assert not re.search(r":\s*\.\.\.\s*(#.*)?$", python, re.M) and "self.opts" not in python  # no stub body
    module_file = tmp_path / "reviews.py"
    module_file.write_text(python)
    spec = importlib.util.spec_from_file_location("lorazoo.train.tasks.reviews_from_contributing", module_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)  # registers task "reviews"

    data = tmp_path / "reviews.csv"
    write(data, [{"review": f"text {i}", "label": ("negative", "positive")[i % 2]} for i in range(30)])
    node = OmegaConf.create(yaml.safe_load(config))["task"]
    node.data_file = str(data)
    task = build_task(node, 0)
    task.load()
    assert len(task.train_rows) == 27 and {r[2] for r in task.train_rows} == {0, 1}

    cfg = compose_config(*TINY, "model=tiny_bert", "task.max_train_samples=null", "task.max_eval_samples=null")
    cfg.task = node
    run(cfg, output_dir=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"

    (tmp_path / "bad.csv").write_text("review,label\nfine,positive\nmeh,neutral\n")
    node.data_file = str(tmp_path / "bad.csv")
    with pytest.raises(DataFormatError, match=rf"{re.escape(str(tmp_path / 'bad.csv'))}:3: "):
        build_task(node, 0).load()
