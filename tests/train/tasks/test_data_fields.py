"""Data errors name file:line: every field of every JSONL/CSV reader in
train/tasks/ with a wrong JSON type is one DataFormatError line ``<file>:<line>: field 'x' must be ...``,
generated over each reader, each field and each JSON type, instead of ``'int' object has no attribute 'strip'``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lorazoo.train.errors import DataFormatError
from lorazoo.train.tasks import build_task

GSM = {"question": "1+1?", "answer": "1+1=2\n#### 2"}
MATH = {"problem": "1+2?", "solution": r"$\boxed{3}$", "answer": "3", "subject": "Algebra", "level": 2}
META = {"query": "What is 3+3?", "response": "3+3=6. The answer is: 6"}
ALPACA = {"instruction": "Say hi.", "input": "", "output": "hi"}


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gsm8k(split: str) -> Callable[[Path, dict], tuple[dict, Path]]:
    def build(tmp: Path, bad: dict) -> tuple[dict, Path]:
        for name in ("train", "test"):
            jsonl(tmp / f"{name}.jsonl", [GSM, bad if name == split else GSM])
        return {"name": "math/gsm8k", "data_dir": str(tmp)}, tmp / f"{split}.jsonl"

    return build


def math_eval(tmp: Path, bad: dict) -> tuple[dict, Path]:
    path = jsonl(tmp / "math.jsonl", [MATH, bad])
    return {
        "name": "math/math",
        "data_file": str(path),
        "source": "math_rest",
        "eval": "math",
        "max_eval_samples": 1,
    }, path


def train_file(source: str) -> Callable[[Path, dict], tuple[dict, Path]]:
    def build(tmp: Path, bad: dict) -> tuple[dict, Path]:
        jsonl(tmp / "gsm" / "test.jsonl", [GSM])
        good = META if source == "metamathqa" else MATH
        path = jsonl(tmp / "train.jsonl", [good, bad])
        return {"name": "math/gsm8k", "data_dir": str(tmp / "gsm"), "source": source, "train_file": str(path)}, path

    return build


def alpaca(tmp: Path, bad: dict) -> tuple[dict, Path]:
    path = jsonl(tmp / "alpaca.jsonl", [ALPACA, bad])
    return {"name": "instruct/alpaca", "data_file": str(path)}, path


# reader: (build, good record, required string fields, optional fields with the types they accept)
READERS = {
    "gsm8k train": (gsm8k("train"), GSM, ("question", "answer"), {}),
    "gsm8k test": (gsm8k("test"), GSM, ("question", "answer"), {}),
    "math eval": (math_eval, MATH, ("problem",), {"solution": "a string", "answer": "a number", "level": "an integer"}),
    "metamathqa train": (train_file("metamathqa"), META, ("query", "response"), {}),
    "math train": (
        train_file("math_train"),
        MATH,
        ("problem", "solution"),
        {"answer": "a number", "subject": "a string", "type": "a string", "level": "an integer"},
    ),
    "alpaca": (alpaca, ALPACA, ("instruction", "output"), {"input": "a string"}),
}
WRONG = {"null": None, "the number 5": 5, "the number 2.5": 2.5, "true": True, "a list": [1], "an object": {"a": 1}}
CASES = [
    (reader, field, kind) for reader, (_, _, required, _) in READERS.items() for field in required for kind in WRONG
]
OPTIONAL_WRONG = {"true": True, "a list": [1], "an object": {"a": 1}}
OPTIONAL_CASES = [
    (reader, field, kind)
    for reader, (_, _, _, optional) in READERS.items()
    for field in optional
    for kind in OPTIONAL_WRONG
]


def load(reader: str, tmp: Path, field: str, value) -> tuple[pytest.ExceptionInfo, Path]:
    build, good, _, _ = READERS[reader]
    options, path = build(tmp, {**good, field: value})
    with pytest.raises(DataFormatError) as exc:
        build_task(OmegaConf.create(options), seed=0).load()
    assert "\n" not in str(exc.value)
    return exc, path


@pytest.mark.parametrize("reader,field,kind", CASES)
def test_required_field_of_a_wrong_type_names_file_line_and_field(tmp_path: Path, reader: str, field: str, kind: str):
    exc, path = load(reader, tmp_path, field, WRONG[kind])
    assert str(exc.value) == f"{path}:2: field {field!r} must be a string, got {kind}"


@pytest.mark.parametrize("reader,field,kind", OPTIONAL_CASES)
def test_optional_field_of_a_wrong_type_names_file_line_and_field(tmp_path: Path, reader: str, field: str, kind: str):
    exc, path = load(reader, tmp_path, field, OPTIONAL_WRONG[kind])
    assert re.fullmatch(rf"{re.escape(str(path))}:2: field '{field}' must be null or .*, got {kind}", str(exc.value))


def test_alpaca_json_list_names_the_record(tmp_path: Path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([ALPACA, {**ALPACA, "instruction": 5}]))
    task = build_task(OmegaConf.create({"name": "instruct/alpaca", "data_file": str(path)}), seed=0)
    with pytest.raises(
        DataFormatError,
        match=rf"^{re.escape(str(path))}: record 2: field 'instruction' must be a string, got the number 5$",
    ):
        task.load()


@pytest.mark.parametrize("row", ["positive", "positive,1"])
def test_tweets_row_without_its_text_names_file_and_line(tmp_path: Path, row: str):
    """A CSV row with too few columns: csv.DictReader gives None for the text, which trained as ''."""
    path = tmp_path / "tweets.csv"
    path.write_text(f"sentiment,confidence,text\npositive,1,good day\n{row}\n")
    task = build_task(OmegaConf.create({"name": "tweets", "data_file": str(path)}), seed=0)
    with pytest.raises(DataFormatError, match=rf"^{re.escape(str(path))}:3: field 'text' is missing"):
        task.load()


def test_good_records_still_load(tmp_path: Path):
    for reader, (build, good, _, _) in READERS.items():
        options, _ = build(tmp_path / reader.replace(" ", "-"), dict(good))
        build_task(OmegaConf.create(options), seed=0).load()
