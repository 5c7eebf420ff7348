"""The one schema of a run's config: every leaf key's type and bounds, checked once before anything loads.

Types are the annotations of the dataclasses each group is read into (TrainerOptions, ModelOptions, the
task's Options, ...); bounds are declared below, one entry per numeric key. ``check`` resolves the config
(an unset ``${oc.env:...}`` is one line naming the key), then checks every key against its type and bounds
and builds each group's dataclass (their own cross-key checks), so ``trainer.max_steps=abc`` or
``trainer.num_epochs=0`` stops in seconds with one ConfigError line naming the key and what is valid.
``projection.kwargs`` are typed by each projection's own Options dataclass (projections/options.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lorazoo.train.errors import ConfigError

INT32 = 2**31 - 1  # Trainer's step counters and torch's int32 index arithmetic
SEED_MAX = 2**32 - 1  # numpy.random.seed (transformers.set_seed) takes 0..2**32-1
EPOCHS_MAX = 1e6  # far beyond any paper (VeRA's 80 epochs); more is a typo, not a run


def _workers_max() -> int:
    """DataLoader worker processes: more than 4 per CPU core only adds processes, never speed."""
    return 4 * (os.cpu_count() or 1)


@dataclass(frozen=True)
class Bound:
    """An inclusive range ``low..high`` (``open_low``/``open_high`` exclude the end), plus ``also``: values
    valid outside it (``trainer.max_steps=-1``). ``high`` may be a function of the machine."""

    low: float | None = None
    high: float | Callable[[], float] | None = None
    open_low: bool = False
    open_high: bool = False
    also: tuple[Any, ...] = ()
    hint: str = ""

    def top(self) -> float | None:
        return self.high() if callable(self.high) else self.high

    def admits(self, value: float) -> bool:
        if value in self.also:
            return True
        low, high = self.low, self.top()
        if low is not None and (value < low or (self.open_low and value == low)):
            return False
        return not (high is not None and (value > high or (self.open_high and value == high)))

    def describe(self, integer: bool) -> str:
        low, high = self.low, self.top()
        if integer and not self.open_low and not self.open_high and low is not None and high is not None:
            text = f"an integer in {_num(low)}..{_num(high)}"
        else:
            left = "" if low is None else f"{'>' if self.open_low else '>='} {_num(low)}"
            right = "" if high is None else f"{'<' if self.open_high else '<='} {_num(high)}"
            text = f"{'an integer' if integer else 'a finite number'} {' and '.join(t for t in (left, right) if t)}"
        text += "".join(f" or {v!r}" for v in self.also)
        return text + (f" ({self.hint})" if self.hint else "")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _positive(high: float = INT32, hint: str = "") -> Bound:
    return Bound(1, high, hint=hint)


# Every numeric key of every group (task.* applies to each task's Options). test_config_keys checks the table
# covers every int/float key the dataclasses declare.
BOUNDS: dict[str, Bound] = {
    "seed": Bound(0, SEED_MAX),
    "trainer.max_steps": Bound(1, INT32, also=(-1,), hint="-1: train for trainer.num_epochs"),
    "trainer.num_epochs": Bound(0, EPOCHS_MAX, open_low=True, hint="0 epochs would train nothing"),
    "trainer.batch_size": _positive(),
    "trainer.eval_batch_size": _positive(),
    "trainer.grad_accum": _positive(),
    "trainer.warmup_ratio": Bound(0, 1, open_high=True, hint="the fraction of steps with warmup"),
    "trainer.max_grad_norm": Bound(0, hint="0 turns clipping off"),
    "trainer.eval_steps": _positive(),
    "trainer.save_steps": _positive(),
    "trainer.save_total_limit": Bound(2, INT32, hint="a crash mid-save must leave a complete older checkpoint"),
    "trainer.logging_steps": _positive(),
    "trainer.num_workers": Bound(0, _workers_max, hint="at most 4 per CPU core"),
    "trainer.ddp_timeout": _positive(hint="seconds"),
    "trainer.divergence_factor": Bound(1, open_low=True, hint="null turns the divergence stop off"),
    "trainer.divergence_patience": _positive(),
    "trainer.fsdp_config.fsdp_version": Bound(1, 2),
    "projection.rank": _positive(),
    "projection.alpha": Bound(0),
    "projection.dropout": Bound(0, 1, open_high=True),
    "optimizer.lr": Bound(0, open_low=True),
    "optimizer.weight_decay": Bound(0),
    "optimizer.betas": Bound(0, 1, open_high=True),  # each of the two
    "optimizer.eps": Bound(0, open_low=True),
    "optimizer.groups.lr": Bound(0, open_low=True),
    "optimizer.groups.weight_decay": Bound(0),
    "task.max_train_samples": _positive(),
    "task.max_eval_samples": _positive(),
    "task.max_length": _positive(hint="also at most the model's positions"),
    "task.split_seed": Bound(0, SEED_MAX),
    "task.holdout_dev": _positive(),
    "task.dev_fraction": Bound(0, 1, open_low=True, open_high=True),
    "task.min_confidence": Bound(0, 1),
    "task.eval_size": _positive(),
    "task.num_generations": _positive(),
    "task.max_new_tokens": _positive(),
    "eval.lm_eval.num_fewshot": Bound(0, INT32),
    "eval.lm_eval.limit": Bound(0, open_low=True, hint="< 1: a fraction of each task"),
    "eval.lm_eval.batch_size": _positive(),
    "eval.lm_eval.max_length": _positive(),
}
WORDS: dict[str, tuple[str, ...]] = {"eval.lm_eval.batch_size": ("auto",)}  # strings valid beside a number


@dataclass
class TopLevel:
    """configs/config.yaml's own keys (the groups are checked by their own dataclasses)."""

    seed: int = 0
    name: str | None = None
    task_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_root: str | None = None


GROUPS = ("projection", "optimizer", "task", "model", "trainer", "logger", "eval")
TOP_LEVEL = (*GROUPS, *(f.name for f in dataclasses.fields(TopLevel)))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text_hint(value: Any) -> str:
    """A number written as text (quoted, or read by ${oc.env:...}, which always gives text) says how to pass it."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (this is text: write the number unquoted, or ${oc.decode:${oc.env:VAR}} for one from the environment)"


def _bound_key(key: str) -> str:
    """The BOUNDS entry of ``key``: tasks share ``task.*``; every optimizer group shares ``optimizer.groups.*``."""
    parts = key.split(".")
    if parts[:2] == ["optimizer", "groups"] and len(parts) == 4:
        return f"optimizer.groups.{parts[3]}"
    return key


def _kind(annotation: Any) -> tuple[list[Any], bool]:
    """(the non-None alternatives of an annotation, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = list(typing.get_args(annotation))
        return [a for a in args if a is not type(None)], type(None) in args
    return [annotation], annotation is type(None)


def _describe(alternatives: list[Any]) -> str:
    names = []
    for kind in alternatives:
        origin = typing.get_origin(kind) or kind
        if origin is list:
            inner = typing.get_args(kind)
            names.append(f"a list of {_describe(list(inner)).removeprefix('a ').removeprefix('an ')}s")
        else:
            names.append(
                {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}.get(
                    origin, getattr(origin, "__name__", str(origin))
                )
            )
    return " or ".join(names)


def _matches(value: Any, kind: Any) -> bool:
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return True
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if origin is str:
        return isinstance(value, str)
    if origin is list:
        (inner,) = typing.get_args(kind) or (Any,)
        return isinstance(value, (list, tuple)) and all(_matches(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if dataclasses.is_dataclass(origin):
        return isinstance(value, dict)
    return isinstance(value, origin)


def check_value(key: str, value: Any, annotation: Any) -> None:
    """``value`` against its annotation and ``BOUNDS``/``WORDS``; raises one ConfigError line naming ``key``."""
    alternatives, nullable = _kind(annotation)
    bound, words = BOUNDS.get(_bound_key(key)), WORDS.get(_bound_key(key), ())
    if value is None:
        if nullable:
            return
        raise ConfigError(f"{key}=null is invalid; valid: {_describe(alternatives)}")
    if isinstance(value, str) and words and value in words:
        return
    numeric = [a for a in alternatives if a in (int, float)]
    if bound is not None and numeric:
        elements = value if isinstance(value, (list, tuple)) else [value]
        integer = int in numeric and float not in numeric
        good = all(_matches(v, int if integer else float) and bound.admits(v) for v in elements)
        if good and any(_matches(value, a) for a in alternatives):
            return
        valid = bound.describe(integer) + "".join(f" or {w!r}" for w in words) + (" or null" if nullable else "")
        if typing.get_origin(alternatives[0]) is list:
            valid = f"a list of numbers, each {valid}"
        raise ConfigError(f"{key}={_shown(value)} is invalid; valid: {valid}{_text_hint(value)}")
    if not any(_matches(value, a) for a in alternatives):
        scalar = isinstance(value, (int, float, bool))  # Hydra read a number or true/false: quoting keeps it text
        quoted = f" (quote it to pass text: {key}='{value}')" if str in alternatives and scalar else ""
        valid = _describe(alternatives) + "".join(f" or {w!r}" for w in words) + (" or null" if nullable else "")
        raise ConfigError(f"{key}={_shown(value)} is invalid; valid: {valid}{quoted}")
    if bound is not None and isinstance(value, (list, tuple)):
        for item in value:
            if not bound.admits(item):
                raise ConfigError(f"{key}={_shown(value)} is invalid; valid: each {bound.describe(False)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(cls: type, node: Any, where: str) -> None:
    """Every key of ``node`` (a plain dict) is a field of dataclass ``cls`` and holds a value of its type."""
    if not isinstance(node, dict):
        raise ConfigError(f"{where}={_shown(node)} is invalid; valid: a mapping of its keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(node) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid keys: {list(fields)}")
    hints = _hints(cls)
    for name, value in node.items():
        key = f"{where}.{name}" if where else str(name)
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            check_fields(typing.cast(type, hints[name]), value, key)
            continue
        check_value(key, value, hints[name])
        if key == "optimizer.groups":
            from lorazoo.train.engine.optimizer import GroupOptions

            for group, entry in value.items():
                check_fields(GroupOptions, entry, f"{key}.{group}")
        elif key == "trainer.fsdp_config":
            for sub, entry in value.items():
                if f"{key}.{sub}" in BOUNDS:
                    check_value(f"{key}.{sub}", entry, int)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The plain config with every interpolation resolved; one that cannot be is a ConfigError naming its key."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in str(key).split("."):
            raw = raw.get(part) if isinstance(raw, dict) else None
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cause = cause.removeprefix("KeyError raised while resolving interpolation: ").strip('"')
        raise ConfigError(
            f"{key}={_shown(raw)} cannot be resolved ({cause}); valid: set what it reads, or give {key} a value"
        ) from None
    if not isinstance(plain, dict):
        raise ConfigError(f"the config is {_shown(plain)}; valid: a mapping of groups and keys")
    return typing.cast("dict[str, Any]", plain)


def group_classes(plain: dict[str, Any]) -> dict[str, type]:
    """The dataclass each group's keys are typed by (the task's from the task registry)."""
    from lorazoo.train.engine.optimizer import OptimizerOptions
    from lorazoo.train.evaluation.harness import EvalOptions
    from lorazoo.train.options import LoggerOptions, ModelOptions, ProjectionOptions, TrainerOptions
    from lorazoo.train.tasks import task_class, task_names

    classes: dict[str, type] = {
        "projection": ProjectionOptions,
        "optimizer": OptimizerOptions,
        "model": ModelOptions,
        "trainer": TrainerOptions,
        "logger": LoggerOptions,
        "eval": EvalOptions,
    }
    task = plain.get("task")
    name = task.get("name") if isinstance(task, dict) else None
    try:
        classes["task"] = task_class(name if isinstance(name, str) else "").Options
    except ConfigError:
        raise ConfigError(f"task.name={_shown(name)} is not a registered task; valid: {task_names()}") from None
    return classes


def check(cfg: DictConfig) -> dict[str, Any]:
    """Check every key of a composed config; returns it resolved. Runs before any data, model or run dir."""
    plain = resolved(cfg)
    unknown = sorted(set(plain) - set(TOP_LEVEL), key=str)
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {unknown}; valid: {list(TOP_LEVEL)}")
    check_fields(TopLevel, {k: v for k, v in plain.items() if k not in GROUPS}, "")
    from lorazoo.train.options import from_node

    for group, cls in group_classes(plain).items():
        if group in plain:
            check_fields(cls, plain[group], group)
            from_node(cls, plain[group], f"{group} config")  # the dataclass's own checks across its keys
    return plain
