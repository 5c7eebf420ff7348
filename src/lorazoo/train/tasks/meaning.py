"""What a run's main metric is and which way is better, as its metrics.json records it.

The task declares it (``Task.metric_meaning``) and the runner writes it into metrics.json; the sweep objective,
the summary print and compare read it from there, so nothing downstream keeps its own list of metric names. A
record written before lorazoo recorded it falls back to the task's declaration, rebuilt from the run's own task
config (a task's constructor reads no data); where that cannot be built the reader gets a one-line error naming
the run, never a guess from the metric's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lorazoo import LoraZooError
from lorazoo.train.tasks.base import build_task

KEYS = ("main_metric", "greater_is_better")


class MetricMeaningError(LoraZooError, ValueError):
    """A run record states no usable main metric or direction, and its task config cannot supply them."""


@dataclass(frozen=True)
class MetricMeaning:
    """A main metric and its direction."""

    main_metric: str
    greater_is_better: bool

    def oriented(self, value: float) -> float:
        """``value`` turned so that larger is better (what an optimiser maximises, what a sort ranks)."""
        return float(value) if self.greater_is_better else -float(value)

    @property
    def phrase(self) -> str:
        return "higher is better" if self.greater_is_better else "lower is better"


def recorded_meaning(record: Mapping[str, Any], task_node: Any, where: str) -> MetricMeaning:
    """The meaning ``record`` (a metrics.json) states; without its keys, the one the task built from
    ``task_node`` (the run's task config) declares. ``where`` names the run in the error."""
    present = [key for key in KEYS if key in record]
    if present:
        name, greater = record.get("main_metric"), record.get("greater_is_better")
        if not isinstance(name, str) or not name or not isinstance(greater, bool):
            raise MetricMeaningError(
                f"{where}: main_metric={name!r}, greater_is_better={greater!r} is not a metric meaning; "
                "valid: a metric name and true or false"
            )
        return MetricMeaning(name, greater)
    if task_node is None:
        raise MetricMeaningError(
            f"{where}: the record has no main_metric/greater_is_better (written by an older lorazoo) and no "
            "task config was found to rebuild them from; valid: a run dir holding .hydra/config.yaml or "
            "lorazoo_run.json"
        )
    try:
        meaning = build_task(task_node, 0).metric_meaning()
    except LoraZooError as exc:
        raise MetricMeaningError(
            f"{where}: the record has no main_metric/greater_is_better (written by an older lorazoo) and its task "
            f"config does not build with this lorazoo ({exc}); valid: a record with both keys, or a task config "
            "this version reads"
        ) from None
    return MetricMeaning(meaning["main_metric"], meaning["greater_is_better"])


def task_node_of(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``task`` node of a flattened config (``task.name``, ``task.max_length``, ...); None without one."""
    node: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith("task."):
            continue
        *parents, leaf = key.removeprefix("task.").split(".")
        inner = node
        for parent in parents:
            inner = inner.setdefault(parent, {})
        inner[leaf] = value
    return node or None
