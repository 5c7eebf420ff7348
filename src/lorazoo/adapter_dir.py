"""The checked read of a saved adapter directory, apart from the lifecycle that installs what it returns.

Every check (config and layout against the safetensors header, layout against the base, head shapes, tensor
values, regenerated structures, a weight-aware method's base) runs on a stand-alone projection before any
model changes, so ``load_adapter`` is all or nothing. Sizes come from JSON and the header first, so a file
declaring a huge rank is refused before anything large is allocated.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lorazoo import files, integrity
from lorazoo.adapted_layers import base_weights
from lorazoo.config import AdapterConfig
from lorazoo.errors import AdapterFileError, LayoutMismatchError, TargetModulesError
from lorazoo.layout import Layout
from lorazoo.projections import Projection, build_projection, layout_rank
from lorazoo.sharding import copy_into, shape_of
from lorazoo.targets import ModuleCopies, layout_from_model

HeadTensors = dict[str, dict[str, torch.Tensor]]  # saved module name -> its state dict


def split_adapter_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], HeadTensors]:
    """Separate ``projection.*`` tensors from ``modules_to_save.<module>/<param>`` ones (adapter_tensors' keys)."""
    projection: dict[str, torch.Tensor] = {}
    modules: HeadTensors = {}
    for key, value in tensors.items():
        if key.startswith("projection."):
            projection[key[len("projection.") :]] = value
        elif key.startswith("modules_to_save."):
            module_name, _, param = key[len("modules_to_save.") :].partition("/")
            modules.setdefault(module_name, {})[param] = value
        else:
            raise AdapterFileError(
                f"unexpected tensor {key!r} in adapter file; keys start with 'projection.' or 'modules_to_save.'"
            )
    return projection, modules


def check_layout(saved: Layout, base_model: nn.Module, config: AdapterConfig) -> None:
    """The base must expose the same adapted modules with the same shapes; name the first difference."""
    try:
        current = layout_from_model(base_model, config.target_modules, layout_rank(config), config.modules_to_save)
    except TargetModulesError as exc:
        raise LayoutMismatchError(f"adapter does not fit this base model: {exc}") from None
    if current == saved:
        return
    current_by_name = {e.name: e for e in current}
    for entry in saved:
        other = current_by_name.get(entry.name)
        if other is None:
            raise LayoutMismatchError(
                f"adapter module {entry.name!r} does not exist in this base model (it has {len(current)} matching modules)"
            )
        if other.shape_signature != entry.shape_signature:
            raise LayoutMismatchError(
                f"module {entry.name!r}: adapter has in={entry.in_features}, out={entry.out_features}, rank={entry.rank}; "
                f"base has in={other.in_features}, out={other.out_features}"
            )
    extra = [e.name for e in current if e.name not in {s.name for s in saved}]
    raise LayoutMismatchError(
        f"base model has adapted module(s) the adapter lacks, e.g. {extra[:3]}; it was made for another model"
    )


def checked_adapter(
    path: str | Path, base_model: nn.Module, with_heads: bool = True, live: Projection | None = None
) -> tuple[AdapterConfig, Projection, HeadTensors]:
    """The adapter at ``path`` as a stand-alone projection with its tensors loaded, plus its head tensors, after
    every check; nothing of ``base_model`` changes. ``with_heads=False`` ignores the saved heads (another
    task's); ``live``: the adapter being overwritten, whose record of its base a weight-aware file is checked
    against (the base may hold a merge now)."""
    where = str(Path(path) / files.WEIGHTS_NAME)
    config, layout = files.read_adapter_config(path)
    checksums = files.read_checksums(path)
    header = files.read_tensor_header(path)
    integrity.check_declared(config, layout, header, checksums, where)
    check_layout(layout, base_model, config)
    if with_heads:  # saved heads' shapes against the base, from the header (meta tensors: nothing allocated)
        declared = {key: torch.empty(shape, device="meta") for key, (_, shape) in header.items()}
        _head_state(base_model, split_adapter_tensors(declared)[1])
    projection_tensors, heads = split_adapter_tensors(files.read_adapter_tensors(path))
    if not with_heads:
        heads = {}
    projection = build_projection(layout, config)
    _check_values(projection, projection_tensors, base_model, heads, where)
    integrity.check_structures(projection, config, checksums, where)
    try:
        projection.load_adapter_state_dict(projection_tensors)
    except (ValueError, RuntimeError) as exc:
        raise AdapterFileError(f"{where!r} does not match its config: {exc}") from None
    if projection.reads_base_weights:  # its saved structures were derived from one base: this one?
        if live is not None and live.reads_base_weights:  # ``live`` read (or checked) this base when unmerged
            projection.check_same_base(live, where)
        else:
            projection.check_base(base_weights(base_model, layout), where)
    missing = sorted(set(config.modules_to_save) - {m.rsplit(".", 1)[-1] for m in heads} - set(heads))
    if missing and with_heads:
        raise AdapterFileError(f"{where!r} lacks the saved module(s) {missing} its config lists in modules_to_save")
    return config, projection, heads


def _check_values(
    projection: Projection,
    projection_tensors: dict[str, torch.Tensor],
    base_model: nn.Module,
    heads: HeadTensors,
    where: str,
) -> None:
    """Every saved tensor against the one it replaces (dtype, shape, finiteness: ``integrity.check_values``)."""
    own = dict(projection.named_parameters()) | {k: v for k, v in projection.named_buffers() if v is not None}
    integrity.check_values(
        {f"projection.{k}": v for k, v in projection_tensors.items()},
        {f"projection.{k}": v for k, v in own.items()},
        where,
    )
    integrity.check_values(
        {f"modules_to_save.{m}/{k}": v for m, state in heads.items() for k, v in state.items()},
        _head_state(base_model, heads),
        where,
    )


def _head_state(base_model: nn.Module, heads: HeadTensors) -> dict[str, torch.Tensor]:
    """The base's own tensors for every saved head (the original module), keyed like the file; shapes checked."""
    out: dict[str, torch.Tensor] = {}
    for module_name, state in heads.items():
        try:
            module = base_model.get_submodule(module_name)
        except AttributeError:
            raise AdapterFileError(f"saved module {module_name!r} does not exist in this base model") from None
        module = module.original if isinstance(module, ModuleCopies) else module
        own = module.state_dict(keep_vars=True)
        for key, value in state.items():
            if key not in own or shape_of(own[key]) != tuple(value.shape):
                got = shape_of(own[key]) if key in own else "no such tensor"
                raise AdapterFileError(
                    f"saved head tensor {module_name}/{key} has shape {tuple(value.shape)}; this base "
                    f"model's is {got} (another num_labels?)"
                )
            out[f"modules_to_save.{module_name}/{key}"] = own[key]
    return out


def load_heads(base_model: nn.Module, name: str, heads: HeadTensors, path: str | Path) -> None:
    """Copy checked head tensors into adapter ``name``'s copies of the saved modules (wrapped at install)."""
    for module_name, state in heads.items():
        wrapper = base_model.get_submodule(module_name)
        if not isinstance(wrapper, ModuleCopies):
            raise AdapterFileError(
                f"{str(path)!r}: saved module {module_name!r} is not in this adapter's modules_to_save"
            )
        try:
            _load_head(wrapper.copies[name], module_name, state)
        except ValueError as exc:
            raise AdapterFileError(
                f"{str(Path(path) / files.WEIGHTS_NAME)!r} does not match its config: {exc}"
            ) from None


def _load_head(head: nn.Module, module_name: str, state: dict[str, torch.Tensor]) -> None:
    """``load_state_dict`` that also fills sharded (FSDP) parameters: each rank keeps its own shard."""
    own = head.state_dict(keep_vars=True)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"saved module {module_name!r} does not fit: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for key, value in state.items():
            if tuple(value.shape) != shape_of(own[key]):
                raise ValueError(
                    f"tensor {module_name}/{key} has shape {tuple(value.shape)}, expected {shape_of(own[key])}"
                )
            copy_into(own[key], value)
