"""Stage 1: the composed config checked and parsed ONCE into typed options that every later stage reads."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf, open_dict

from lorazoo.train.config import schema as config_schema
from lorazoo.train.engine.optimizer import OptimizerOptions
from lorazoo.train.errors import ConfigError
from lorazoo.train.evaluation.harness import EvalOptions, eval_options
from lorazoo.train.options import LoggerOptions, ModelOptions, ProjectionOptions, TrainerOptions, from_node, to_plain
from lorazoo.train.records.recorded import Redactor, recorded
from lorazoo.train.tasks.data_root import apply_data_root

_MISSING = object()


@dataclass(frozen=True)
class RunSetup:
    """Everything a run reads from its config; built by ``parse``, never re-read from the raw nodes."""

    cfg: DictConfig  # after task_overrides and data_root (written to config_used.yaml)
    plain: dict[str, Any]  # ``cfg`` resolved: what the run-dir fingerprint hashes
    shown: dict[str, Any]  # what records hold: ${oc.env:...} as written, never its value
    redact: Redactor
    hydra: dict[str, Any]
    applied: dict[str, Any]  # the task_overrides entries that took effect
    data_from: str | None  # the path data_root chose
    seed: int
    projection: ProjectionOptions
    model: ModelOptions
    trainer: TrainerOptions
    optimizer: OptimizerOptions
    logger: LoggerOptions
    eval: EvalOptions
    task: dict[str, Any]  # the task group (typed by its Task class in build_task)

    @property
    def overrides(self) -> list[str]:
        return cast("list[str]", self.hydra.get("overrides", []))

    @property
    def max_length(self) -> Any:
        return self.task.get("max_length", 128)

    @property
    def eval_split(self) -> str:
        """What the final scores are measured on: the dev/test data, or a held-in split carved from train."""
        held = self.task.get("holdout_dev")
        return f"held-in ({held} examples carved from train, task.holdout_dev)" if held else "dev"


def hydra_context() -> dict[str, Any]:
    """Output dir, overrides and sweep name from Hydra when running under it; empty otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    return {
        "output_dir": hc.runtime.output_dir,
        # as typed: an ${oc.env:...} in an override stays text (its value is never recorded)
        "overrides": [str(o) for o in cast("list[Any]", OmegaConf.to_container(hc.overrides.task, resolve=False))],
        "experiment": hc.runtime.choices.get("experiment"),
        "sweep_dir": hc.sweep.dir if multirun else None,
        "multirun": multirun,
    }


def apply_task_overrides(cfg: DictConfig, explicit: list[str]) -> tuple[DictConfig, dict[str, Any]]:
    """Apply ``task_overrides[<task name>]`` ({dotted key: value}, a paper's per-task table) to a copy of
    ``cfg``; keys also given on the command line keep the command-line value."""
    table = to_plain(cfg.get("task_overrides")) or {}
    if table and str(cfg.task.name) not in table:  # a paper's table without this task: its defaults are no setting
        raise ConfigError(
            f"experiment {cfg.get('name')!r} has no settings for task {str(cfg.task.name)!r}; "
            f"its tasks: {sorted(table)}"
        )
    entry = table.get(str(cfg.task.name)) or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in explicit}
    cfg = copy.deepcopy(cfg)
    applied = {}
    for key, value in entry.items():
        # optimizer.groups.<group>.* may name a group the base config leaves unset (a per-task head lr)
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING and not key.startswith("optimizer.groups."):
            raise ConfigError(f"task_overrides[{cfg.task.name!r}] sets unknown key {key!r}")
        if key not in given:
            with open_dict(cfg):  # an optimizer.groups.<group> entry may be new
                OmegaConf.update(cfg, key, value, merge=False)
            applied[key] = value
    return cfg, applied


def parse(cfg: DictConfig, hydra: dict[str, Any]) -> RunSetup:
    """Check every key, apply the per-task table and data_root, then type each group once."""
    config_schema.check(cfg)  # every key typed and bounded before anything reads it
    cfg, applied = apply_task_overrides(cfg, hydra.get("overrides", []))
    cfg, data_from = apply_data_root(cfg)
    plain = config_schema.check(cfg)  # the values task_overrides and data_root set, too
    shown = recorded(cfg)
    groups = copy.deepcopy(plain)  # the typed views own their lists and dicts: a stage's edit never reaches plain
    return RunSetup(
        cfg=cfg,
        plain=plain,
        shown=shown,
        redact=Redactor(plain, shown),
        hydra=hydra,
        applied=applied,
        data_from=data_from,
        seed=int(groups["seed"]),
        projection=from_node(ProjectionOptions, groups.get("projection"), "projection config"),
        model=from_node(ModelOptions, groups.get("model"), "model config"),
        trainer=from_node(TrainerOptions, groups.get("trainer"), "trainer config"),
        optimizer=from_node(OptimizerOptions, groups.get("optimizer"), "optimizer config"),
        logger=from_node(LoggerOptions, groups.get("logger"), "logger config"),
        eval=eval_options(groups.get("eval")),
        task=groups.get("task") or {},
    )
