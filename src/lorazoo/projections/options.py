"""A projection's options as a dataclass: defaults, types and bounds declared once, validation generated.

A projection declares ``Options`` (a dataclass whose fields are made with :func:`option`) and the base
class turns ``AdapterConfig.projection_kwargs`` into an instance of it: unknown keys, wrong types and
out-of-range values become one-line ``ConfigError`` messages naming the key, the value and what is
valid. The dataclass is the ONE place an option's default lives (configs/projection/*.yaml set only
the paper settings that differ from it), so adding an option is one line in the projection's file.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lorazoo.errors import ConfigError

_META = "lorazoo"


def option(
    default: Any,
    *,
    low: int | float | None = None,
    high: int | float | str | None = None,
    high_name: str = "",
    positive: bool = False,
    choices: Sequence[Any] | None = None,
    parse: Callable[[str, Any], Any] | None = None,
    hint: str = "",
) -> Any:
    """A dataclass field with what validation needs.

    ``low``/``high`` bound ints and floats (inclusive); ``high`` may name a value known only once the
    layout is (``"D"``, ``"rank"``) or an earlier option (``"num_vectors"``). ``positive`` means > 0,
    ``choices`` a fixed set, ``parse(projection_name, value)`` a custom check that returns the value.
    """
    meta = {
        "low": low,
        "high": high,
        "high_name": high_name,
        "positive": positive,
        "choices": list(choices) if choices is not None else None,
        "parse": parse,
        "hint": hint,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={_META: meta})
    return dataclasses.field(default=default, metadata={_META: meta})


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """The options of a projection that has none (lora)."""


def option_defaults(options_cls: type) -> dict[str, Any]:
    """Every option's default value, in declaration order."""
    return {f.name: _default(f) for f in dataclasses.fields(options_cls)}


def parse_options(projection: str, options_cls: type, values: Mapping[str, Any], context: Mapping[str, int]) -> Any:
    """``values`` checked against ``options_cls`` and merged over its defaults; ``context`` holds D, rank."""
    fields = dataclasses.fields(options_cls)
    known = [f.name for f in fields]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for projection {projection!r}; valid: {sorted(known) or 'none'}"
        )
    hints = typing.get_type_hints(options_cls)
    resolved: dict[str, Any] = {}
    for f in fields:
        value = values[f.name] if f.name in values else _default(f)
        resolved[f.name] = _check(
            projection, f.name, value, hints[f.name], f.metadata.get(_META, {}), {**context, **resolved}
        )
    return options_cls(**resolved)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"option {f.name} has no default: every projection option needs one")


def _check(
    projection: str, key: str, value: Any, kind: Any, meta: Mapping[str, Any], context: Mapping[str, Any]
) -> Any:
    def fail(valid: str) -> ConfigError:
        return ConfigError(f"{projection}: {key}={value!r} is invalid; valid: {valid}")

    if meta.get("parse") is not None:
        return meta["parse"](projection, value)
    if meta.get("choices") is not None:
        if value not in meta["choices"]:
            raise fail(str(meta["choices"]))
        return value
    hint = f" ({meta['hint']})" if meta.get("hint") else ""
    if kind is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if kind is int:
        low, high = meta.get("low"), _bound(meta.get("high"), context)
        if meta.get("positive"):
            low = 1 if low is None else max(low, 1)
        ok = not isinstance(value, bool) and isinstance(value, int)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            raise fail(_int_range(low, high, meta.get("high_name", "")) + hint)
        return value
    if kind is float:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        low = meta.get("low")
        if not ok or (meta.get("positive") and value <= 0) or (low is not None and value < low):
            valid = (
                "a finite number" + (" > 0" if meta.get("positive") else "") + (f" >= {low}" if low is not None else "")
            )
            raise fail(valid + hint)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise fail("a string" + hint)
        return value
    return value


def _bound(bound: int | float | str | None, context: Mapping[str, Any]) -> Any:
    return context[bound] if isinstance(bound, str) else bound


def _int_range(low: int | None, high: int | None, high_name: str) -> str:
    if high is not None:
        return f"{low if low is not None else 0}..{high:,}" + (f" ({high_name})" if high_name else "")
    if low == 1:
        return "a positive integer"
    if low is not None:
        return f"an integer >= {low}"
    return "an integer"
