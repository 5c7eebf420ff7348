"""Sequence classification / regression tasks over (text_a, text_b, label) rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from lorazoo.train.evaluation import metrics
from lorazoo.train.tasks.base import Task, carve_holdout, subsample
from lorazoo.train.tasks.encoding import encode_columns

Row = tuple[str, "str | None", "int | float"]


class ClassificationTask(Task):
    """Subclasses implement ``read()`` → (train rows, dev rows) and set ``label_names`` / ``keys``."""

    task_type: ClassVar[str] = "seq_cls"
    supports_holdout: ClassVar[bool] = True

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        self.train_rows: list[Row] = []
        self.eval_rows: list[Row] = []

    # subclasses --------------------------------------------------------------------
    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names in label-id order; empty for regression."""
        raise NotImplementedError

    def read(self) -> tuple[list[Row], list[Row]]:
        raise NotImplementedError

    # shared ------------------------------------------------------------------------
    @property
    def regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)

    def load(self) -> None:
        train, dev = self.read()
        if self.options.holdout_dev is not None:  # lr search: score on held-in train examples, never on dev
            train, dev = carve_holdout(train, self.options.holdout_dev, self.options.split_seed + 2)
        self.train_rows = subsample(train, self.options.max_train_samples, self.options.split_seed)
        self.eval_rows = subsample(dev, self.options.max_eval_samples, self.options.split_seed + 1)

    def _tokenize(self, rows: list[Row], tokenizer: Any) -> Any:
        """A `datasets.Dataset` of tokenizer features + labels; padding happens per batch in the collator."""
        dtype = float if self.regression else int
        pair = bool(rows) and rows[0][1] is not None
        columns: dict[str, list[Any]] = {"text_a": [r[0] for r in rows], "labels": [dtype(r[2]) for r in rows]}
        if pair:
            columns["text_b"] = [r[1] for r in rows]

        def encode(batch: dict[str, list[Any]]) -> Any:
            return tokenizer(
                batch["text_a"], batch["text_b"] if pair else None, truncation=True, max_length=self.options.max_length
            )

        return encode_columns(columns, encode, drop=[c for c in columns if c != "labels"])

    def datasets(self, tokenizer: Any) -> tuple[Any, Any]:
        return self._tokenize(self.train_rows, tokenizer), self._tokenize(self.eval_rows, tokenizer)

    def collator(self, tokenizer: Any) -> Callable:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        preds = np.squeeze(logits, -1) if self.regression else np.argmax(logits, -1)
        return metrics.compute(self.metric_keys(), preds, np.asarray(labels))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"train_examples": len(self.train_rows), "eval_examples": len(self.eval_rows)}
        if not self.regression:
            out["majority_rate"] = metrics.majority_rate([r[2] for r in self.eval_rows])
            out["label_names"] = list(self.label_names)
        return out
