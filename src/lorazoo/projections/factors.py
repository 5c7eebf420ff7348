"""What a layer receives as one LoRA factor: a θ_D segment, or diag(s)·M kept as its two parts (``ScaledRows``).

Tied-LoRA and VeRA build every factor as a row scaling of a shared matrix, A_l = diag(s_l) M. If the layer
multiplied by the product, autograd would keep that product (r × h per layer, θ_D over the model) until
backward. Applied as (x Mᵀ) ⊙ s, the layer keeps only M (shared and alive anyway) and the (tokens × r)
product, as PEFT's VeRA does. Everything that needs the numbers themselves (merge, export, ΔW,
``Projection.forward``) reads ``dense``. This module imports nothing of lorazoo, so projections and the
reconstructor both depend on it and not on each other's internals.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


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


@dataclass(frozen=True)
class ScaledRows:
    """The factor diag(scale) · matrix (scale: (n,), matrix: (n, m)), never multiplied out during training."""

    scale: torch.Tensor
    matrix: torch.Tensor

    def __post_init__(self) -> None:
        if self.scale.dim() != 1 or self.matrix.dim() != 2 or self.scale.shape[0] != self.matrix.shape[0]:
            raise ValueError(
                f"ScaledRows needs scale (n,) and matrix (n, m); got {tuple(self.scale.shape)} and "
                f"{tuple(self.matrix.shape)}"
            )

    @property
    def shape(self) -> torch.Size:
        return self.matrix.shape

    @property
    def dtype(self) -> torch.dtype:
        return torch.promote_types(self.scale.dtype, self.matrix.dtype)

    def dense(self) -> torch.Tensor:
        return RowScale.apply(self.scale, self.matrix)


Factor = torch.Tensor | ScaledRows  # one θ_D segment as ``Projection.pieces`` hands it over


def dense(factor: Factor) -> torch.Tensor:
    """The factor's numbers as a tensor (its shape: flat for a plain segment, (n, m) for ScaledRows)."""
    return factor.dense() if isinstance(factor, ScaledRows) else factor


def concatenated(pieces: Iterable[Factor]) -> torch.Tensor:
    """θ_D from its segments: what ``Projection.forward`` returns for a projection that builds ``pieces``."""
    return torch.cat([dense(p).reshape(-1) for p in pieces])


def as_matrix(factor: Factor, rows: int, cols: int) -> Factor:
    """The factor shaped (rows × cols): a flat segment is viewed, ScaledRows must already have that shape."""
    if isinstance(factor, ScaledRows):
        if tuple(factor.shape) != (rows, cols):
            raise ValueError(f"a factor of shape {tuple(factor.shape)} was handed to a ({rows} × {cols}) slot")
        return factor
    return factor.view(rows, cols)


def scaled(factor: Factor, scaling: float) -> Factor:
    """scaling · factor; for ScaledRows only its (n,) scale is multiplied."""
    if scaling == 1.0:
        return factor
    if isinstance(factor, ScaledRows):
        return ScaledRows(factor.scale * scaling, factor.matrix)
    return factor * scaling


def linear(h: torch.Tensor, factor: Factor) -> torch.Tensor:
    """h · factorᵀ for inputs h (..., m), as ``F.linear(h, factor)``.

    A ScaledRows (n × m) meets T = h.numel() / m input rows as (h Mᵀ) ⊙ s when T < m, else as its dense
    product: the first keeps (T × n) numbers for backward and costs T·n multiplications beyond the matmul,
    the second n × m of each, so the smaller one is chosen per call (VeRA's r = 256 factors at a few hundred
    tokens: the parts; Tied-LoRA's (o × 8) B: the product).
    """
    if isinstance(factor, ScaledRows):
        rows, width = h.numel() // max(h.shape[-1], 1), factor.shape[1]
        if rows < width:
            return F.linear(h, factor.matrix.to(h.dtype)) * factor.scale.to(h.dtype)
        factor = factor.dense()
    return F.linear(h, factor)


def embedding(indices: torch.Tensor, factor: Factor, **options: Any) -> torch.Tensor:
    """Column ``i`` of the factor for every index i, as ``F.embedding(indices, factorᵀ, **options)``.

    ``padding_idx`` and ``scale_grad_by_freq`` act on the table's gradient, which for ScaledRows reaches the
    scale too; with either set, the table is the dense factor so that the scale's gradient stays exact.
    """
    if isinstance(factor, ScaledRows):
        if options.get("padding_idx") is None and not options.get("scale_grad_by_freq"):
            return F.embedding(indices, factor.matrix.T, **options) * factor.scale
        factor = factor.dense()
    return F.embedding(indices, factor.T, **options)
