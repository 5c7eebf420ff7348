"""The number a sweep optimises: the task's main metric, oriented so that larger is better.

Hydra's Optuna sweeper reads the value ``run.py``'s main returns. A job that did not complete returns
``None``: hydra-optuna-sweeper 1.3 then records the trial as FAIL (its value is not float-castable) and
goes on with the next trial, where a NaN would make optuna 2.10's ``Study.tell`` raise and end the sweep.
"""

from __future__ import annotations

import math
from typing import Any

from lorazoo.train.tasks import build_task

LOWER_IS_BETTER = frozenset({"perplexity", "loss"})  # returned negated, so every objective is maximised


def main_metric(task_node: Any, seed: int = 0) -> str:
    """The task's headline metric (the first of its metric keys: accuracy, matthews_correlation, pearson, ...)."""
    keys = build_task(task_node, seed).metric_keys()
    return keys[0] if keys else "loss"


def objective(record: dict[str, Any] | None, metric: str) -> float | None:
    """``record[metric]`` (negated when lower is better); None for a failed/unfinished run or a non-finite value."""
    if not record or record.get("status") != "completed":
        return None
    value = record.get(metric, (record.get("metrics") or {}).get(metric))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return -float(value) if metric in LOWER_IS_BETTER else float(value)
