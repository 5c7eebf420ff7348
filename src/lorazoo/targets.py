"""Which modules of a base model are targets, and the module listing that sees through lorazoo's wrappers.

Two kinds of wrapper replace modules of the base in place: an ``AdaptedLayer`` (adapted_layers.py:
Linear, Conv1D, Embedding) around each target, and ``ModuleCopies`` (here) around each fully trained
module such as a task head, which is therefore never a target itself. The listing that decides which Linears a config targets must treat a wrapper as the module it stands for
(so a second adapter finds the same layout as the first); it lives here, next to the wrappers whose
types it checks, so that the shape layer (layout.py) never needs to know them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lorazoo.adapted_layers import (
    AdaptedEmbedding,
    AdaptedLayer,
    MixedBatch,
    ThetaCache,
    adapted_layer_type,
    module_features,
)
from lorazoo.errors import AdapterStateError, TargetModulesError
from lorazoo.layout import HEAD_MODULE_NAMES, Layout, is_all_linear, select_targets


class ModuleCopies(nn.Module):
    """A fully trained module (task head) with one copy per adapter; the active adapter's copy runs."""

    def __init__(self, original: nn.Module, cache: ThetaCache):
        super().__init__()
        self.original = original
        self.copies = nn.ModuleDict()
        self.cache = cache

    def add(self, adapter_name: str) -> None:
        clone = copy.deepcopy(self.original)
        if float_dtype(clone) in (torch.bfloat16, torch.float16):
            clone.float()  # trained copies keep fp32 weights, like θ: bf16 would round small updates away
        clone.requires_grad_(True)
        self.copies[adapter_name] = clone

    @property
    def active(self) -> nn.Module:
        name = None if self.cache.disabled else self.cache.active_adapter  # disabled: the base's own module
        return self.copies[name] if name is not None and name in self.copies else self.original

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.cache.mixed is not None:
            return self._mixed_forward(self.cache.mixed, *args, **kwargs)
        return self._run(self.active, *args, **kwargs)

    def _run(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        dtype, copy_dtype = float_dtype(self.original), float_dtype(module)
        if module is self.original or dtype is None or copy_dtype is None or copy_dtype == dtype:
            return module(*args, **kwargs)
        # an fp32 copy in a half-precision base: compute in fp32, hand the base its own dtype back
        return _cast(module(*_cast(args, copy_dtype), **_cast(kwargs, copy_dtype)), dtype)

    def _mixed_forward(self, mixed: MixedBatch, *args: Any, **kwargs: Any) -> Any:
        """Mixed-adapter batch: each adapter's copy on its own rows, the original on the rest."""
        x = args[0] if len(args) == 1 and not kwargs else None
        if not isinstance(x, torch.Tensor):
            raise AdapterStateError(
                "a mixed-adapter batch through a saved module (modules_to_save) needs it to take one "
                "tensor input with rows first"
            )
        out = self._run(self.original, x)
        if not isinstance(out, torch.Tensor):
            raise AdapterStateError(
                f"a mixed-adapter batch needs saved modules that return a tensor, got {type(out).__name__}"
            )
        for name, rows in mixed.groups(x.shape[0], x.device, "a saved module"):
            if name in self.copies:
                out = out.index_copy(0, rows, self._run(self.copies[name], x.index_select(0, rows)).to(out.dtype))
        return out


def float_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of the module's first floating parameter (None if it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    """Floating tensors anywhere in ``tree`` (args, kwargs, outputs) cast to ``dtype``."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, tree)


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


# ----------------------------------------------------------------------------- listing
def adaptable_modules(model: nn.Module) -> dict[str, type[AdaptedLayer]]:
    """Modules lorazoo can adapt (Linear, Conv1D, Embedding), in model order, with their wrapper type;
    lorazoo's own wrappers count as the module they wrap."""
    found: dict[str, type[AdaptedLayer]] = {}
    internal: tuple[str, ...] = ()
    wrapped: dict[str, str] = {}
    for name, module in model.named_modules():
        if internal and name.startswith(internal):
            continue
        if isinstance(module, AdaptedLayer):
            internal = (*internal, name + ".")
            found[name] = type(module)
        elif isinstance(module, ModuleCopies):
            internal = (*internal, name + ".copies.")
            wrapped[name + ".original"] = name
        elif name and (layer_type := adapted_layer_type(module)) is not None:
            found[wrapped.get(name, name)] = layer_type
    return found


def linear_module_names(model: nn.Module) -> list[str]:
    """Adaptable Linear-like modules (nn.Linear, GPT-2's Conv1D) in model order: what ``all-linear`` picks from."""
    return [n for n, kind in adaptable_modules(model).items() if kind is not AdaptedEmbedding]


def head_module_names(model: nn.Module) -> set[str]:
    """Modules that make up task heads (output embeddings, ``classifier``...): ``all-linear`` skips them."""
    heads = set()
    get_out = getattr(model, "get_output_embeddings", None)
    output = get_out() if callable(get_out) else None
    for name, module in model.named_modules():
        top = name.split(".", 1)[0]
        if (output is not None and module is output) or top in HEAD_MODULE_NAMES:
            heads.add(name)
    return heads


def inside(name: str, modules: Sequence[str]) -> bool:
    """Is module ``name`` one of ``modules`` (exact or dotted suffix, as ``modules_to_save`` entries match)
    or inside one of them?"""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(p == m or p.endswith("." + m) for p in prefixes for m in modules)


def match_target_modules(
    model: nn.Module, target_modules: Sequence[str] | str, exclude: Sequence[str] = ()
) -> list[str]:
    """Names of the modules of ``model`` that ``target_modules`` selects, in model order.

    ``all-linear`` means every Linear and Conv1D except the heads; names and regexes may also pick
    embeddings (``embed_tokens``, ``wte``, ``word_embeddings``). Modules inside ``exclude`` (the adapter's
    ``modules_to_save``, trained in full) are never targets, as in PEFT: a LoRA on a fully trained module
    would only re-parametrise it; an entry that selects nothing else is an error saying so.
    """
    if is_all_linear(target_modules):
        names = [n for n in linear_module_names(model) if not inside(n, exclude)]
        return select_targets(names, head_module_names(model), target_modules)
    every = list(adaptable_modules(model))
    names = [n for n in every if not inside(n, exclude)]
    if exclude and not isinstance(target_modules, str):
        for target in target_modules:
            hits = [n for n in every if n == target or n.endswith("." + target)]
            if hits and all(inside(n, exclude) for n in hits):
                raise TargetModulesError(
                    f"target_modules entry {target!r} only matches modules inside modules_to_save={list(exclude)} "
                    f"({hits[:3]}), which are trained in full and not adapted; drop it or drop it from modules_to_save"
                )
    return select_targets(names, set(), target_modules)


def layout_from_model(
    model: nn.Module,
    target_modules: Sequence[str] | str,
    rank: int | Callable[[int, int], int],
    exclude: Sequence[str] = (),
) -> Layout:
    """The layout of ``target_modules`` at ``rank`` (one, or per (in, out)) on a model (real or meta-device,
    wrapped or not), leaving out what ``exclude`` (``modules_to_save``) trains in full."""
    names = match_target_modules(model, target_modules, exclude)
    modules = dict(model.named_modules())
    return Layout.from_shapes(((n, *module_features(modules[n])) for n in names), rank)
