"""The number a sweep optimises: the run's main metric, oriented so that larger is better.

Which metric is main and which way is better is what the run's record states (``main_metric`` and
``greater_is_better``, the task's own declaration; see ``tasks/meaning.py``), never a list of names here.
Hydra's Optuna sweeper reads the value ``run.py``'s main returns. A job that did not complete returns
``None``: hydra-optuna-sweeper 1.3 then records the trial as FAIL (its value is not float-castable) and
goes on with the next trial, where a NaN would make optuna 2.10's ``Study.tell`` raise and end the sweep.
"""

from __future__ import annotations

import math
from typing import Any

from lorazoo.train.records.run_record import recorded_score
from lorazoo.train.tasks.meaning import recorded_meaning


def objective(record: dict[str, Any] | None, task_node: Any = None) -> float | None:
    """The record's main metric, negated when lower is better; None for a failed/unfinished run or a
    non-finite value. ``task_node`` (the run's task config) supplies the meaning when the record lacks it."""
    if not record or record.get("status") != "completed":
        return None
    where = f"{record['output_dir']}/metrics.json" if record.get("output_dir") else "the run's metrics.json"
    meaning = recorded_meaning(record, task_node, where)
    metric = meaning.main_metric
    value = recorded_score(record, metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return meaning.oriented(value)
