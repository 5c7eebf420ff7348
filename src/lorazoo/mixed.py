"""Mixed-adapter batches and the forward's own keyword checks.

``model(**batch, adapter_names=[name per row])`` serves several adapters — of any projections, with any
target modules — in one forward: each named adapter's θ_D is computed once (the reconstructor's
pre-hook), and every adapted layer adds an adapter's ΔW to that adapter's rows only; rows named
``"__base__"`` get the base model. ``generate`` takes the same argument (rows repeated for beams or
several return sequences keep their adapter).

transformers' forwards take ``**kwargs`` and drop what they do not know, so a misspelled or unsupported
keyword (``adapter_name=...``) would silently do nothing: ``check_forward_kwargs`` refuses it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

from lorazoo.adapted_layers import LayerSlot, MixedBatch
from lorazoo.errors import AdapterStateError, ConfigError

BASE_ADAPTER = "__base__"
# consumed by transformers' forward decorators (can_return_tuple), so absent from the signature
DECORATOR_KWARGS = frozenset({"return_dict"})


def plan_mixed_batch(model: Any, adapter_names: Any, expandable: bool = False) -> MixedBatch:
    """Validate ``adapter_names`` against ``model`` (an AdaptedModel) and build the batch plan."""
    if isinstance(adapter_names, str) or not isinstance(adapter_names, Sequence) or not adapter_names:
        raise ConfigError(
            f"adapter_names must be a non-empty list with one adapter name per row, got {adapter_names!r}"
        )
    model.check_state("a mixed-adapter batch (adapter_names)", inside_disabled=True)  # disabled: refused below
    names = list(adapter_names)
    bad = sorted({repr(n) for n in names if not isinstance(n, str)})
    if bad:
        raise ConfigError(f"adapter_names entries must be adapter names (str), got {', '.join(bad)}")
    if BASE_ADAPTER in model.adapters:
        raise AdapterStateError(
            f"an adapter is named {BASE_ADAPTER!r}, the reserved name for base-model rows; rename it"
        )
    unknown = sorted(set(names) - set(model.adapters) - {BASE_ADAPTER})
    if unknown:
        raise AdapterStateError(
            f"unknown adapter name(s) {unknown} in adapter_names; existing: {list(model.adapters)}, "
            f"or {BASE_ADAPTER!r} for the base model"
        )
    if model.merged_adapter is not None:
        raise AdapterStateError(
            f"adapter {model.merged_adapter!r} is merged into the base weights, so rows cannot use "
            "other adapters; unmerge() before a mixed-adapter batch"
        )
    if model.cache.disabled:
        raise AdapterStateError("adapter_names given inside disabled(); the base model has no adapters to mix there")
    slots: dict[str, dict[str, LayerSlot]] = {
        n: model.layer_slots(n) for n in dict.fromkeys(names) if n != BASE_ADAPTER
    }
    return MixedBatch(names, slots, expandable=expandable)


def accepted_kwargs(forward: Callable[..., Any]) -> frozenset[str] | None:
    """Keyword names ``forward`` uses, or None when its ``**kwargs`` is untyped (anything may be used)."""
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):
        return None
    named = {n for n, p in signature.parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    var_kw = next((p for p in signature.parameters.values() if p.kind == p.VAR_KEYWORD), None)
    if var_kw is None:
        return frozenset(named)  # Python itself refuses anything else
    try:
        hint = typing.get_type_hints(forward, include_extras=True).get(var_kw.name)
    except (
        NameError,
        TypeError,
        AttributeError,
    ):  # unresolvable annotations: be permissive rather than refuse valid calls
        return None
    typed = next((getattr(arg, "__annotations__", None) for arg in typing.get_args(hint)), None)
    if not isinstance(typed, dict):
        return None
    return frozenset(named | set(typed) | DECORATOR_KWARGS)


def check_forward_kwargs(accepted: frozenset[str] | None, kwargs: dict[str, Any]) -> None:
    """A keyword the base forward would silently drop is an error naming it and what is valid."""
    if accepted is None:
        return
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(
            f"forward got unknown keyword argument(s) {unknown} (the base model would ignore them); "
            f"valid: adapter_names and {sorted(accepted)}"
        )
