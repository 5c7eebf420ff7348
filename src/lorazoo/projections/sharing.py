"""What the shared-factor projections (tied, vera) have in common: layer groups, row-scaled factors, random matrices.

Both Tied-LoRA and VeRA build every factor as a per-layer diagonal scaling of a shared matrix:
A_l = diag(a_l) A_g and B_l = diag(b_l) B_g. They hand θ_D to the reconstructor as its layout segments
(``Projection.pieces``), each a ``ScaledRows`` (factors.py) that the layer applies as (x A_gᵀ) ⊙ a_l: neither
θ_D nor its gradient is ever formed during training, and autograd keeps only the (tokens × r) and
(tokens × o) products, as PEFT's VeRA does. That is what puts VeRA's peak memory at PEFT's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

from lorazoo.layout import Layout, LayoutEntry
from lorazoo.projections import rng
from lorazoo.projections.factors import ScaledRows


class LayerGroups:
    """A partition of a layout's layers by ``key(entry)``; groups keep first-appearance order."""

    def __init__(self, layout: Layout, key: Callable[[LayoutEntry], Hashable]):
        members: dict[Hashable, list[int]] = {}
        for index, entry in enumerate(layout):
            members.setdefault(key(entry), []).append(index)
        self.keys: list[Hashable] = list(members)
        self.members: list[list[int]] = list(members.values())
        self.entries: list[list[LayoutEntry]] = [[layout[i] for i in m] for m in self.members]
        group_of = {i: (g, pos) for g, m in enumerate(self.members) for pos, i in enumerate(m)}
        self.placement: list[tuple[int, int]] = [group_of[i] for i in range(len(layout))]  # (group, row) per layer

    def __len__(self) -> int:
        return len(self.members)


def scaled_factor_pieces(
    a_scale: torch.Tensor, a: torch.Tensor, b_scale: torch.Tensor, b: torch.Tensor
) -> tuple[ScaledRows, ScaledRows]:
    """diag(a_scale) a and diag(b_scale) b: one layer's A_l, B_l, never multiplied out (factors.py)."""
    return ScaledRows(a_scale, a), ScaledRows(b_scale, b)


def uniform_matrix(seed: int, purpose: str, shape: tuple[int, int], bound: float) -> torch.Tensor:
    """A (rows × cols) float32 matrix with U(±bound) entries from the counter-based generator."""
    values = rng.uniform(seed, purpose, shape[0] * shape[1], -bound, bound)
    return rng.as_tensor(values.reshape(shape))
