"""GLUE (Wang et al. 2019): hub `nyu-mll/glue`, or local TSVs in the classic download_glue_data.py layout.

Local layout: ``task.data_dir`` holds ``train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv``); other
file names via ``task.train_file`` / ``task.eval_file`` (relative to data_dir, or absolute). Label ids
follow the hub's ClassLabel order, so local and hub runs are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.train.errors import ConfigError, DataFormatError
from lorazoo.train.tasks.base import TaskOptions, lines_of, load_hub_split, register_task, require_file
from lorazoo.train.tasks.classification import ClassificationTask, Row


@dataclass(frozen=True)
class GlueSpec:
    """How one GLUE task looks in TSV and on the hub."""

    labels: tuple[str, ...]  # label strings in id order (TSV value → index); () = regression
    keys: tuple[str, ...]  # metric names
    tsv_columns: tuple[str | int, ...]  # text_a, [text_b], label: header names, or indices when no header
    hub_columns: tuple[str, ...]
    dev_file: str = "dev.tsv"
    hub_dev_split: str = "validation"
    header: bool = True
    score_range: tuple[float, float] = (0.0, 5.0)  # regression tasks: STS-B similarity scores lie in [0, 5]


BINARY = ("0", "1")
ENTAIL = ("entailment", "not_entailment")
GLUE: dict[str, GlueSpec] = {
    "cola": GlueSpec(BINARY, ("matthews_correlation",), (3, 1), ("sentence", "label"), header=False),
    "sst2": GlueSpec(BINARY, ("accuracy",), ("sentence", "label"), ("sentence", "label")),
    "mrpc": GlueSpec(
        BINARY, ("accuracy", "f1"), ("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2", "label")
    ),
    "qqp": GlueSpec(
        BINARY, ("accuracy", "f1"), ("question1", "question2", "is_duplicate"), ("question1", "question2", "label")
    ),
    "stsb": GlueSpec(
        (), ("pearson", "spearmanr"), ("sentence1", "sentence2", "score"), ("sentence1", "sentence2", "label")
    ),
    "mnli": GlueSpec(
        ("entailment", "neutral", "contradiction"),
        ("accuracy",),
        ("sentence1", "sentence2", "gold_label"),
        ("premise", "hypothesis", "label"),
        dev_file="dev_matched.tsv",
        hub_dev_split="validation_matched",
    ),
    "qnli": GlueSpec(ENTAIL, ("accuracy",), ("question", "sentence", "label"), ("question", "sentence", "label")),
    "rte": GlueSpec(ENTAIL, ("accuracy",), ("sentence1", "sentence2", "label"), ("sentence1", "sentence2", "label")),
}


@dataclass
class GlueOptions(TaskOptions):
    hub_id: str = "nyu-mll/glue"
    train_file: str | None = None  # default train.tsv
    eval_file: str | None = None  # default dev.tsv (MNLI dev_matched.tsv)
    skip_malformed: bool = False  # skip (rather than reject) TSV lines with missing fields or bad labels


def _column_index(column: str | int) -> int:
    """A headerless file's column: an index (a name needs a header to look it up in)."""
    if not isinstance(column, int):
        raise TypeError(f"column {column!r} of a headerless GLUE file must be an index")
    return column


def read_tsv(path: Path, spec: GlueSpec, skip_malformed: bool) -> list[Row]:
    """Rows of a GLUE TSV exactly as GLUE distributes it: split on tabs with no quote processing (GLUE text
    holds unbalanced quotes), UTF-8 with or without a byte-order mark (MRPC's header has one), a header or
    none (CoLA). A bad row raises DataFormatError naming the file, the line and what is valid."""
    lines = lines_of(path)
    if not lines:
        raise DataFormatError(f"data file {str(path)!r} is empty")
    start = 0
    columns: tuple[int, ...]
    if spec.header:
        header = [name.strip().lstrip("\ufeff") for name in lines[0].split("\t")]
        missing = [c for c in spec.tsv_columns if c not in header]
        if missing:
            raise DataFormatError(f"{path}:1: header lacks column(s) {missing}; got {header}")
        # nothing is missing, so every column is one of the header's names
        columns = tuple(header.index(c) for c in spec.tsv_columns if isinstance(c, str))
        start = 1
    else:
        columns = tuple(_column_index(c) for c in spec.tsv_columns)
    rows: list[Row] = []
    for lineno, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        problem = None
        if len(fields) <= max(columns):
            problem = f"{len(fields)} tab-separated fields, expected at least {max(columns) + 1}"
        else:
            values = [fields[i] for i in columns]
            label, problem = parse_label(values[-1].strip(), spec)
        if problem is not None:
            if skip_malformed:
                continue
            raise DataFormatError(f"{path}:{lineno}: {problem}; fix the file or set task.skip_malformed=true")
        rows.append((values[0], values[1] if len(values) == 3 else None, label))
    if not rows:
        raise DataFormatError(f"data file {str(path)!r} holds no data rows")
    return rows


def parse_label(raw: Any, spec: GlueSpec) -> tuple[Any, str | None]:
    """(label id or score, None) or (None, what is wrong): a class outside the label set, a score that is not a
    finite number in the task's range."""
    if spec.labels:
        key = str(raw)
        if key in spec.labels:
            return spec.labels.index(key), None
        return None, f"label {raw!r} is not in the label set; valid: {list(spec.labels)}"
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = math.nan
    low, high = spec.score_range
    if not math.isfinite(score) or not low <= score <= high:
        return None, f"score {raw!r} is invalid; valid: a finite number in [{low:g}, {high:g}]"
    return score, None


@register_task("glue")
class GlueTask(ClassificationTask):
    Options = GlueOptions

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        self.subset = options.name.split("/", 1)[-1]
        if self.subset not in GLUE:
            raise ConfigError(f"unknown GLUE task {options.name!r}; valid: {['glue/' + k for k in GLUE]}")
        self.spec = GLUE[self.subset]

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.spec.labels

    def metric_keys(self) -> list[str]:
        return list(self.spec.keys)

    def read(self) -> tuple[list[Row], list[Row]]:
        opts = self.options
        if opts.data_dir:
            return self._read_local(Path(opts.data_dir))
        hint = (
            f"download GLUE and set task.data_dir=<dir with train.tsv and {self.spec.dev_file}> "
            f"(e.g. task.data_dir=data/glue/{_glue_dir(self.subset)})"
        )
        return tuple(
            self._from_hub(load_hub_split(opts.hub_id, self.subset, split, hint), split)  # type: ignore
            for split in ("train", self.spec.hub_dev_split)
        )

    def _read_local(self, root: Path) -> tuple[list[Row], list[Row]]:
        opts = self.options
        out = []
        for given, default, key in (
            (opts.train_file, "train.tsv", "train_file"),
            (opts.eval_file, self.spec.dev_file, "eval_file"),
        ):
            path = root / (given or default)
            hint = f"task.data_dir={str(root)!r} must hold {default} (or set task.{key}=<file name>)"
            out.append(read_tsv(require_file(path, hint), self.spec, opts.skip_malformed))
        return out[0], out[1]

    def _from_hub(self, split: Any, name: str = "train") -> list[Row]:
        cols = self.spec.hub_columns
        texts = [split[c] for c in cols[:-1]]
        rows: list[Row] = []
        for i, raw in enumerate(split[cols[-1]]):
            # hub labels are ids (ClassLabel) or scores; -1 marks an unlabelled (test) row
            value = (
                self.spec.labels[raw]
                if self.spec.labels and isinstance(raw, int) and 0 <= raw < len(self.spec.labels)
                else raw
            )
            label, problem = parse_label(value, self.spec)
            if problem is not None:
                if self.options.skip_malformed:
                    continue
                raise DataFormatError(f"{self.options.hub_id}/{self.subset} split {name!r} row {i}: {problem}")
            rows.append((texts[0][i], texts[1][i] if len(texts) == 2 else None, label))
        return rows


GLUE_DIRS = {  # the folder names of the classic GLUE download (download_glue_data.py)
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "stsb": "STS-B",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
}


def _glue_dir(subset: str) -> str:
    return GLUE_DIRS[subset]
