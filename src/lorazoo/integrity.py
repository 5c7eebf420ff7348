"""Adapter-file integrity: what a saved adapter must agree with before any of it enters a model.

VeRA's frozen matrices, Uni-LoRA's index map, Tied-LoRA's shared matrices and the Gaussian/Fastfood
projections are not stored: they are regenerated from (seed, options, layout) by the counter-based
generator. An edited seed or option, or a lorazoo whose generator changed, would silently give another
ΔW. So ``save_adapter`` records every AdapterConfig field, a small fingerprint of every regenerated
structure (16 sampled values each), a digest of the layout and the dtype/shape of every tensor; an adapter
without this record is refused (``"hand_written": true`` opts out). Loading checks, in this order:

1. the config and declared sizes against the record and the file, from JSON and the safetensors header only
   (nothing large allocated: a config declaring rank 10^6, or a header declaring a 1 GiB tensor, fails in
   milliseconds; the declared bytes must fit in free memory);
2. every floating tensor is finite; integer/bool tensors only where the projection itself keeps one;
3. the regenerated structures against the recorded ones, naming the field that differs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from lorazoo.config import AdapterConfig
from lorazoo.errors import AdapterFileError
from lorazoo.layout import Layout
from lorazoo.projections import layout_rank
from lorazoo.projections.rng import GENERATOR_VERSION

SAMPLES = 16


def layout_digest(layout: Layout) -> str:
    return hashlib.sha256(json.dumps(layout.to_list(), sort_keys=True).encode()).hexdigest()[:16]


def regenerated(projection: Any) -> dict[str, torch.Tensor]:
    """The projection's regenerated structures: its buffers, or ``structure_tensors()`` where they are lazy.
    Buffers the adapter file itself carries (VeRA ``save_projection``) come from the file, not the seed."""
    own = getattr(projection, "structure_tensors", None)
    if callable(own):
        return dict(own())
    saved = projection.saved_buffer_names()
    return {name: b for name, b in projection.named_buffers() if b is not None and name not in saved}


def _sample(tensor: torch.Tensor) -> list[float] | list[int]:
    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n == 0:
        return []
    index = torch.tensor(sorted({(i * (n - 1)) // (SAMPLES - 1) for i in range(SAMPLES)}), device=flat.device)
    values = flat.index_select(0, index).cpu()
    return values.tolist() if not values.is_floating_point() else [float(v) for v in values.double()]


def describe(
    projection: Any,
    config: AdapterConfig,
    tensors: Mapping[str, torch.Tensor],
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``checksums`` block save_adapter writes into adapter_config.json; ``info`` are the other keys written
    beside the config (base class, label count: export rebuilds the base from them), recorded as they are."""
    return {
        "generator_version": GENERATOR_VERSION,
        "info": _plain(dict(info or {})),
        "config": _plain(config.to_dict()),  # every field: alpha, dropout, targets ... not only the generator's inputs
        "seed": config.seed,
        "projection_kwargs": dict(config.projection_kwargs),
        "layout": layout_digest(projection.layout),
        "structures": {
            name: {"shape": list(t.shape), "sample": _sample(t)} for name, t in regenerated(projection).items()
        },
        "tensors": {
            key: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)} for key, t in tensors.items()
        },
    }


def check_declared(
    config: AdapterConfig,
    layout: Layout,
    header: Mapping[str, tuple[str, list[int]]],
    checksums: Mapping[str, Any] | None,
    where: str,
) -> None:
    """Sizes the config declares against the layout and the file's tensor header (no tensor data read)."""
    rank_of = layout_rank(config)
    for entry in layout:
        if entry.rank != rank_of(entry.in_features, entry.out_features):
            raise AdapterFileError(
                f"{where}: config declares rank={config.rank} but module {entry.name!r} was saved with "
                f"rank {entry.rank}; the config was edited or belongs to another adapter"
            )
    check_memory(header, where)
    if not checksums:
        return  # marked hand-written (io.read_checksums refuses a lorazoo adapter without its record)
    check_config_record(config, checksums, where)
    if checksums.get("layout") != layout_digest(layout):
        raise AdapterFileError(
            f"{where}: the layout (module names, shapes, rank) differs from the one saved with the "
            "weights; the file was edited"
        )
    recorded = checksums.get("tensors") or {}
    for key in sorted(set(recorded) | set(header)):
        if key not in header or key not in recorded:
            raise AdapterFileError(
                f"{where}: tensor {key!r} is {'missing from' if key not in header else 'not recorded in'} "
                "the weights file; it does not belong to this config"
            )
        dtype, shape = header[key]
        if [dtype, list(shape)] != [recorded[key]["dtype"], recorded[key]["shape"]]:
            raise AdapterFileError(
                f"{where}: tensor {key!r} is {dtype}{list(shape)} in the weights file but was saved as "
                f"{recorded[key]['dtype']}{recorded[key]['shape']}"
            )


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), so a saved record compares equal to a fresh one."""
    return json.loads(json.dumps(value, default=str))


def check_config_record(config: AdapterConfig, checksums: Mapping[str, Any], where: str) -> None:
    """Every AdapterConfig field must be the one saved with the weights; the first edited one is named."""
    recorded = checksums.get("config")
    if not isinstance(recorded, dict):
        raise AdapterFileError(
            f"{where}: the integrity record has no 'config' entry (saved by an older lorazoo, or edited), so the "
            'config fields cannot be verified; re-save the adapter, or add "hand_written": true to load it unverified'
        )
    current = _plain(config.to_dict())
    saved_kwargs, kwargs = recorded.get("projection_kwargs") or {}, current.get("projection_kwargs") or {}
    fields = [(k, recorded.get(k), current.get(k)) for k in sorted(set(recorded) | set(current))]
    fields += [(k, saved_kwargs.get(k), kwargs.get(k)) for k in sorted(set(saved_kwargs) | set(kwargs))]
    for key, old, new in fields:
        if key != "projection_kwargs" and old != new:
            raise AdapterFileError(
                f"{where}: adapter_config.json differs from the config saved with the weights ({key}: trained "
                f"with {old!r}, the config now says {new!r}); loading it would give another ΔW, so restore it"
            )


def check_memory(header: Mapping[str, tuple[str, list[int]]], where: str) -> None:
    """The tensors the file declares must fit in this machine's free memory: refused before any is read."""
    declared = sum(math.prod(shape) * _itemsize(dtype) for dtype, shape in header.values())
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if declared > free:
        raise AdapterFileError(
            f"{where}: its tensors declare {declared / 2**30:.1f} GiB but this machine has "
            f"{free / 2**30:.1f} GiB free; valid: an adapter that fits in memory"
        )


def _itemsize(dtype: str) -> int:
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def check_values(tensors: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], where: str) -> None:
    """Floating tensors must be finite; a tensor lorazoo keeps as float may not arrive as int/bool (or back)."""
    for key, value in tensors.items():
        own = expected.get(key)
        if own is not None and own.is_floating_point() != value.is_floating_point():
            raise AdapterFileError(
                f"{where}: tensor {key!r} has dtype {value.dtype}; valid: "
                f"{'a floating dtype' if own.is_floating_point() else own.dtype}"
            )
        if own is None and not value.is_floating_point() and key.startswith("modules_to_save."):
            raise AdapterFileError(f"{where}: tensor {key!r} has dtype {value.dtype}; valid: a floating dtype")
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise AdapterFileError(f"{where}: tensor {key!r} holds {bad} NaN/inf value(s); valid: finite values only")


def check_structures(projection: Any, config: AdapterConfig, checksums: Mapping[str, Any] | None, where: str) -> None:
    """The structures this config regenerates must be the ones the adapter was trained with."""
    if not checksums or "structures" not in checksums:
        return
    recorded = checksums["structures"]
    current = {name: {"shape": list(t.shape), "sample": _sample(t)} for name, t in regenerated(projection).items()}
    differing = [
        name for name in sorted(set(recorded) | set(current)) if not _same(recorded.get(name), current.get(name))
    ]
    if not differing:
        return
    raise AdapterFileError(
        f"{where}: regenerated structure {differing[0]!r} differs from the one this adapter was "
        f"trained with ({_cause(config, checksums)}); loading it would give another ΔW"
    )


def same_structures(a: Any, b: Any) -> bool:
    """Two projections regenerate the same structures (compared through their samples)."""
    first = {n: {"shape": list(t.shape), "sample": _sample(t)} for n, t in regenerated(a).items()}
    second = {n: {"shape": list(t.shape), "sample": _sample(t)} for n, t in regenerated(b).items()}
    return first.keys() == second.keys() and all(_same(first[n], second[n]) for n in first)


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None or a["shape"] != b["shape"] or len(a["sample"]) != len(b["sample"]):
        return False
    return all(x == y or abs(x - y) <= 1e-5 * max(1.0, abs(x)) for x, y in zip(a["sample"], b["sample"]))


def _cause(config: AdapterConfig, checksums: Mapping[str, Any]) -> str:
    """Which recorded input of the generator no longer matches: seed, a projection option, or the version."""
    version = checksums.get("generator_version")
    if version != GENERATOR_VERSION:
        return f"generator version: saved with {version}, this lorazoo regenerates with {GENERATOR_VERSION}"
    if checksums.get("seed") != config.seed:
        return f"seed: trained with {checksums.get('seed')!r}, the config now says {config.seed!r}"
    saved = checksums.get("projection_kwargs") or {}
    for key in sorted(set(saved) | set(config.projection_kwargs)):
        if saved.get(key) != config.projection_kwargs.get(key):
            return f"{key}: trained with {saved.get(key)!r}, the config now says {config.projection_kwargs.get(key)!r}"
    return "seed, options and generator version match: the generator itself changed without a version bump"
