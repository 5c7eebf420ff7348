"""Flattened configs and the first key where two differ: how run-dir and checkpoint refusals name the cause."""

from __future__ import annotations

import json
from typing import Any


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values (their order matters)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


NO_DIFFERENCE = "no key differs"
_FIRST = ("projection.name", "projection", "model.name", "task.name")  # what a user changes to start another study


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old → new`` for the first differing key (the method, model and task first, then sorted);
    ``<absent>`` for a key only one side has."""
    keys = sorted(set(old) | set(new), key=lambda k: (_FIRST.index(k) if k in _FIRST else len(_FIRST), k))
    for key in keys:
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if json.dumps(a, default=str) != json.dumps(b, default=str):
            return f"{key}: {a!r} → {b!r}"
    return NO_DIFFERENCE
