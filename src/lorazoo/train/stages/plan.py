"""Stage 3: every input checked in seconds, before any weights load: the adapter asked for, the task and its
data, the adapter fitted to the model's shapes, the memory it needs, the lm-eval tasks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo import AdapterConfig
from lorazoo.projections import get_projection_class
from lorazoo.train.config import preflight
from lorazoo.train.config.model_fit import Change, explicit_keys, fit_projection, meta_layout
from lorazoo.train.errors import ConfigError, DataUnavailableError
from lorazoo.train.evaluation.harness import Harness
from lorazoo.train.evaluation.harness import prepare as prepare_lm_eval
from lorazoo.train.loading.base_model import adapter_config
from lorazoo.train.options import ProjectionOptions
from lorazoo.train.records import progress, provenance
from lorazoo.train.stages.setup import RunSetup
from lorazoo.train.tasks import build_task
from lorazoo.train.tasks.base import Task, recording_reads


@dataclass(frozen=True)
class Plan:
    """What the run will train: the task (data loaded), the adapter as fitted, and what was checked on the way."""

    task: Task
    projection: ProjectionOptions  # fitted to the model (fitted_to_model says what changed)
    adapter: AdapterConfig  # the core config of ``projection``
    changes: list[Change]
    data_files: list[Path]  # the data files the task read: sha256 in metrics.json
    harness: Harness | None  # the lm-eval tasks, checked; None when none are asked for

    @property
    def fitted(self) -> dict[str, Any]:
        return {c.key: c.new for c in self.changes}


def make_plan(setup: RunSetup, stack: contextlib.ExitStack) -> Plan:
    """The checks in the order a wrong value is cheapest to find; ``stack`` keeps the data-file recorder open."""
    adapter = adapter_config(setup.projection, setup.model, setup.seed)  # rank, alpha, name: fail in seconds
    get_projection_class(adapter.projection)
    preflight.check_precision(setup.trainer)
    preflight.check_max_length(setup.max_length, setup.model)
    data_files = stack.enter_context(recording_reads())  # the data files read from here on
    task = _matching_task(setup)
    preflight.check_base_model(setup.model, setup.trainer)  # sizes that make no model, or more than memory holds
    projection, changes = _fitted(setup, task)
    preflight.check_batch_memory(setup.trainer, setup.max_length, setup.model)
    _load_data(setup, task)  # data errors surface before a model is loaded
    harness = prepare_lm_eval(setup.eval)  # lm-eval task names and data, checked now too
    if changes:
        adapter = adapter_config(projection, setup.model, setup.seed)
    return Plan(task, projection, adapter, changes, data_files, harness)


def _matching_task(setup: RunSetup) -> Task:
    task = build_task(setup.task, setup.seed)
    if task.task_type != setup.model.task_type:
        raise ConfigError(
            f"task {task.name!r} needs a {task.task_type} model but model={setup.model.name!r} is "
            f"{setup.model.task_type}; pick a matching model= option"
        )
    return task


def _fitted(setup: RunSetup, task: Task) -> tuple[ProjectionOptions, list[Change]]:
    """The projection fitted to the model's shapes (read on the meta device: seconds, no weights)."""
    layout = meta_layout(setup.model, setup.projection, task.num_labels)
    if layout is None:
        return setup.projection, []
    projection, changes = fit_projection(setup.projection, layout, setup.model.name, explicit_keys(setup.overrides))
    for change in changes:
        progress.say(change.line(setup.model.name))
    preflight.check_adapter_size(projection, layout, setup.model.name, setup.trainer)  # before any allocation
    return projection, changes


def _load_data(setup: RunSetup, task: Task) -> None:
    try:
        task.load()
    except DataUnavailableError as exc:  # say which setting the missing path came from
        origin = provenance.data_path_origin(
            setup.cfg, setup.overrides, setup.applied, setup.data_from, setup.hydra.get("experiment")
        )
        raise DataUnavailableError(f"{exc}; {origin}") from None
