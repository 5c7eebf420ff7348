"""Your own data without code: ``task=text/classify`` (classification or regression) and ``task=text/generate``
(causal-LM fine-tuning) from a CSV, TSV, JSON-lines or JSON-list file with named columns.

``task.data_file`` is the file (split into train/dev by ``task.dev_fraction``, seeded by ``task.split_seed``), or
``task.eval_file`` gives the dev set. Classification labels are inferred from the train file's label column
(sorted; numbers in numeric order) and printed, unless ``task.labels`` lists them (that order = the label ids);
``task.regression=true`` reads the label as a number. Every data problem is one line naming ``file:line``.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.train.errors import ConfigError, DataFormatError
from lorazoo.train.tasks.base import (
    TaskOptions,
    located_records,
    read_text,
    register_task,
    require_file,
    split_train_dev,
    subsample,
)
from lorazoo.train.tasks.causal import CausalLMTask
from lorazoo.train.tasks.classification import ClassificationTask, Row

FORMATS = (".csv", ".tsv", ".jsonl", ".json")


def read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    """(``file:line``, record) of every row; each record holds ``columns`` (a missing one names its line)."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataFormatError(f"{path}: unknown data format {suffix!r}; valid: {', '.join(FORMATS)}")
    if suffix in (".json", ".jsonl"):
        located = located_records(path, ())  # labels may be numbers: the columns are checked here, by presence
        for where, record in located:
            missing = [c for c in columns if c not in record]
            if missing:
                raise DataFormatError(
                    f"{where}: missing field(s) {missing} (it has {sorted(record)[:8]}); set the task.*_column keys"
                )
        return located
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataFormatError(f"{path}:1: no column(s) {missing} in the header {header}; set the task.*_column keys")
    rows = []
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record or any(record.get(c) is None for c in columns):  # too many / too few fields
            raise DataFormatError(f"{where}: expected {len(header)} fields (the header's), got a different count")
        rows.append((where, dict(record)))
    if not rows:
        raise DataFormatError(f"data file {str(path)!r} holds no rows")
    return rows


def _text(record: dict[str, Any], column: str, where: str) -> str:
    value = record[column]
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: column {column!r} must be non-empty text, got {value!r}")
    return value


@dataclass
class TextFileOptions(TaskOptions):
    """Where the data is; shared by both text tasks."""

    data_file: str | None = None  # .csv / .tsv / .jsonl / .json
    eval_file: str | None = None  # null = task.dev_fraction of data_file
    dev_fraction: float = 0.1


def _files(opts: TextFileOptions) -> tuple[Path, Path | None]:
    if opts.data_dir:
        raise ConfigError(f"task {opts.name!r} reads task.data_file (and task.eval_file), not task.data_dir")
    if not opts.data_file:
        raise ConfigError(f"task {opts.name!r} needs task.data_file=<your .csv/.tsv/.jsonl/.json file>")
    hint = "set task.data_file=<file> (and task.eval_file=<file> for a separate dev set)"
    train = require_file(Path(opts.data_file), hint)
    return train, require_file(Path(opts.eval_file), hint) if opts.eval_file else None


def _split(opts: TextFileOptions, read: Any) -> tuple[list, list]:
    train_path, eval_path = _files(opts)
    if eval_path is None:
        return split_train_dev(read(train_path), opts.dev_fraction, opts.split_seed)
    return read(train_path), read(eval_path)


@dataclass
class TextClassifyOptions(TextFileOptions):
    text_column: str = "text"
    text_pair_column: str | None = None  # a second text (sentence pairs)
    label_column: str = "label"
    labels: list[str] | None = None  # class names in id order; null = inferred from the train data
    regression: bool = False  # the label is a number (one output, pearson / spearmanr)


def _label_order(values: set[str]) -> list[str]:
    """Sorted; numbers by value (so 2 < 10)."""

    def key(value: str) -> tuple[int, float, str]:
        try:
            return 0, float(value), value
        except ValueError:
            return 1, 0.0, value

    return sorted(values, key=key)


@register_task("text/classify")
class TextClassifyTask(ClassificationTask):
    """Classification or regression over a text column (and an optional second text column)."""

    Options = TextClassifyOptions

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        self._records: tuple[list, list] | None = None
        self._labels: tuple[str, ...] | None = tuple(map(str, options.labels)) if options.labels else None
        if options.regression and options.labels:
            raise ConfigError("task.labels is for classification; leave it null with task.regression=true")

    def _columns(self) -> tuple[str, ...]:
        opts = self.options
        return tuple(c for c in (opts.text_column, opts.text_pair_column, opts.label_column) if c)

    def _read(self, path: Path) -> list[tuple[str, dict[str, Any]]]:
        return read_table(path, self._columns())

    def _located(self) -> tuple[list, list]:
        if self._records is None:
            self._records = _split(self.options, self._read)
        return self._records

    @property
    def label_names(self) -> tuple[str, ...]:
        if self.options.regression:
            return ()
        if self._labels is None:
            train, _ = self._located()
            found = {str(r[self.options.label_column]).strip() for _, r in train}
            self._labels = tuple(_label_order(found))
            print(
                f"[lorazoo] {self.name}: {len(self._labels)} labels inferred from {self.options.data_file} column "
                f"{self.options.label_column!r}: {list(self._labels)} (ids in this order; task.labels=[...] to set "
                "them)",
                file=sys.stderr,
            )
            if len(self._labels) < 2:
                raise DataFormatError(
                    f"{self.options.data_file}: column {self.options.label_column!r} holds one label "
                    f"{list(self._labels)}; classification needs at least 2 (or task.regression=true)"
                )
        return self._labels

    def metric_keys(self) -> list[str]:
        return ["pearson", "spearmanr"] if self.options.regression else ["accuracy"]

    def _row(self, where: str, record: dict[str, Any]) -> Row:
        opts = self.options
        text = _text(record, opts.text_column, where)
        pair = _text(record, opts.text_pair_column, where) if opts.text_pair_column else None
        raw = record[opts.label_column]
        if opts.regression:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or isinstance(raw, bool):
                raise DataFormatError(f"{where}: label {raw!r} is not a finite number (task.regression=true)")
            return text, pair, value
        label = str(raw).strip()
        if label not in self.label_names:
            raise DataFormatError(f"{where}: label {label!r} is not one of {list(self.label_names)}")
        return text, pair, self.label_names.index(label)

    def read(self) -> tuple[list[Row], list[Row]]:
        train, dev = self._located()
        return [self._row(w, r) for w, r in train], [self._row(w, r) for w, r in dev]


@dataclass
class TextGenerateOptions(TextFileOptions):
    prompt_column: str = "prompt"
    target_column: str = "target"  # the loss is on these tokens only


@register_task("text/generate")
class TextGenerateTask(CausalLMTask):
    """Causal-LM fine-tuning on (prompt, target) columns; scored by held-out loss and perplexity."""

    Options = TextGenerateOptions
    greater_is_better = False  # perplexity

    def metric_keys(self) -> list[str]:
        return ["perplexity"]

    def load(self) -> None:
        opts = self.options
        columns = (opts.prompt_column, opts.target_column)

        def pairs(path: Path) -> list[tuple[str, str]]:
            return [
                (_text(r, opts.prompt_column, w), _text(r, opts.target_column, w)) for w, r in read_table(path, columns)
            ]

        train, dev = _split(opts, pairs)
        self.train_pairs = subsample(train, opts.max_train_samples, opts.split_seed)
        self.eval_pairs = subsample(dev, opts.max_eval_samples, opts.split_seed + 1)
