"""Adapter state on sharded models: FSDP2 ``fully_shard`` (parameters are DTensors between forwards) and
DeepSpeed ZeRO-3 (each rank holds a partition; ``ds_shape`` is the real shape).

lorazoo lets FSDP shard θ like any other parameter (gather, not replicate): FSDP then all-gathers θ
before the forward and reduce-scatters its gradient, so data parallelism stays the engine's own. θ is
tiny next to the base, so the few places that need the whole of it (save, merge, ΔW, export) gather it
with ``full_tensor()``: a collective every rank must enter, in the same order, cheap at d floats.
Replicating θ outside FSDP instead would leave its gradient unsynchronised unless lorazoo all-reduced
it by hand, which is the home-made loop this project avoids.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, cast

import torch
from torch import nn


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed
        return None
    return DTensor


def is_sharded(tensor: Any) -> bool:
    dtensor = _dtensor_type()
    return dtensor is not None and isinstance(tensor, dtensor)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor is gathered (collective on its mesh), anything else returned as is."""
    return cast(Any, tensor).full_tensor() if is_sharded(tensor) else tensor  # Any: a DTensor


def is_zero3_partitioned(tensor: Any) -> bool:
    return hasattr(tensor, "ds_id")  # what DeepSpeed's ZeRO-3 puts on the parameters it partitions


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    """The whole tensor's shape, also for a ZeRO-3 partition (whose ``.shape`` is empty)."""
    return tuple(getattr(tensor, "ds_shape", tensor.shape))


@contextlib.contextmanager
def gathered(params: Iterable[torch.Tensor], modifier_rank: int | None = None) -> Iterator[None]:
    """ZeRO-3 partitions gathered for the duration (a collective; ``modifier_rank``'s writes are kept);
    nothing to do for plain tensors and DTensors (``full`` gathers those)."""
    zero3 = [p for p in params if is_zero3_partitioned(p)]
    if not zero3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(zero3, modifier_rank=modifier_rank):
        yield


def full_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter of ``module`` gathered, keyed like ``named_parameters``, for ``functional_call``."""
    return {name: full(p.detach()) for name, p in module.named_parameters()}


def call_with_full_parameters(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` computed from gathered parameters (and its own plain buffers), not the shards."""
    params = dict(module.named_parameters())
    with gathered(params.values()):  # ZeRO-3 partitions are whole inside
        if not any(is_sharded(p) for p in params.values()):
            return module(*args)
        return torch.func.functional_call(module, full_parameters(module), args)


def copy_into(target: torch.Tensor, value: torch.Tensor) -> None:
    """``target.copy_(value)`` where ``target`` may be a DTensor: each rank keeps its own shard of ``value``."""
    if is_zero3_partitioned(target):
        with gathered([target], modifier_rank=0):  # rank 0's copy is what DeepSpeed re-partitions
            target.data.copy_(value.to(device=target.device, dtype=target.dtype))
        return
    if is_sharded(target):
        from torch.distributed.tensor import distribute_tensor

        dtarget: Any = target  # a DTensor
        value = distribute_tensor(
            value.to(device=target.device, dtype=target.dtype), dtarget.device_mesh, dtarget.placements
        )
    target.copy_(value)


def add_into(target: torch.Tensor, delta: torch.Tensor) -> None:
    """``target += delta`` for a plain or sharded ``target`` (a merged ΔW into a sharded base weight)."""
    if is_sharded(target):
        from torch.distributed.tensor import distribute_tensor

        dtarget: Any = target  # a DTensor
        delta = distribute_tensor(delta.to(device=target.device), dtarget.device_mesh, dtarget.placements)
    target += delta.to(target.dtype)


def is_main_process() -> bool:
    """Global rank 0, or no process group at all: the one process that writes files."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def is_fsdp_managed(module: nn.Module) -> bool:
    """``module`` was passed to FSDP2's ``fully_shard`` (its class became an FSDPModule subclass)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return False
    return isinstance(module, FSDPModule)
