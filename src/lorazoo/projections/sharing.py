"""What the shared-factor projections (tied, vera) have in common: layer groups, row-scaled factors, random matrices.

Both Tied-LoRA and VeRA build every factor as a per-layer diagonal scaling of a shared matrix:
A_l = diag(a_l) A_g and B_l = diag(b_l) B_g. They hand θ_D to the reconstructor as its layout segments
(``Projection.pieces``), one ``RowScale`` per factor: θ_D is never concatenated during training, and in
backward each layer's factor gradient is reduced to its scale's gradient as soon as that layer's backward
has run, so no θ_D-sized gradient (or batched (k, r, h) product) is ever held — only θ_D itself, which the
layers read. That is what puts VeRA's peak memory at PEFT's, whose VeRA never forms A_l, B_l.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from ..layout import Layout, LayoutEntry
from . import rng as zrandom


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


class RowScale(torch.autograd.Function):
    """diag(s) M (s: (n,), M: (n, m)) whose backward keeps no broadcast temporaries.

    s̄_i = ⟨Ḡ_i, M_i⟩ is one batched (1 × m)·(m × 1) product per row (autograd's mul would first form Ḡ ⊙ M,
    a factor-sized tensor); M̄ = diag(s) Ḡ is computed only when M trains (Tied-LoRA's shared A, B).
    Written in the functorch style so ``torch.func`` (``Projection.matrix``'s Jacobian) can vmap it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(scale: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return scale.unsqueeze(-1) * matrix

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        scale, matrix = ctx.saved_tensors
        grad_scale = grad_matrix = None
        if ctx.needs_input_grad[0]:
            grad_scale = (grad.unsqueeze(-2) @ matrix.to(grad.dtype).unsqueeze(-1)).squeeze(-1).squeeze(-1)
        if ctx.needs_input_grad[1]:
            grad_matrix = RowScale.apply(scale.to(grad.dtype), grad)
        return grad_scale, grad_matrix


def scaled_factor_pieces(
    a_scale: torch.Tensor, a: torch.Tensor, b_scale: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """vec(diag(a_scale) a) and vec(diag(b_scale) b): one layer's A_l, B_l as flat θ_D segments."""
    return RowScale.apply(a_scale, a).reshape(-1), RowScale.apply(b_scale, b).reshape(-1)


def uniform_matrix(seed: int, purpose: str, shape: tuple[int, int], bound: float) -> torch.Tensor:
    """A (rows × cols) float32 matrix with U(±bound) entries from the counter-based generator."""
    values = zrandom.uniform(seed, purpose, shape[0] * shape[1], -bound, bound)
    return zrandom.as_tensor(values.reshape(shape))
