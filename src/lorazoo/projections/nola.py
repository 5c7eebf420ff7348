"""NOLA (Koohpayegani et al. 2024, arXiv:2310.02556): LoRA factors as trained mixtures of frozen random bases.

Each factor of each adapted module is its own mixture of k frozen random matrices (k = ``num_basis``):

    A_l = A_l⁰ + Σ_i α_{l,i} A_{l,i},   B_l = Σ_j β_{l,j} B_{l,j},   ΔW_l = (α / r) · B_l A_l,

with A_{l,i}, B_{l,j} ~ U(±1) / √k and trained α_l, β_l ∈ R^k. As the authors' code (UCDvision/NOLA@e009fdc,
``llama/peft/tuners/lora.py`` and ``gpt/src/model_nola.py``: ``NOLALinear`` adds the generated matrix to its own
weight, ``reset_lora_parameters`` zeroes the coefficients, then sets lora_A's weight kaiming-uniform (a = √5) and
lora_B's to 0): α = β = 0 at init, A_l⁰ ~ U(±1/√in) is frozen and B's offset is 0, so ΔW = 0 at init while β
gets a gradient through A_l⁰. θ_D is therefore affine in θ_d (θ_D = P θ_d + A⁰), not linear: ``matrix()`` is
None. d = 2 k per adapted module.

The bases are never saved: basis i of the factor at θ_D offset o is counters [k·o + i·n, k·o + (i+1)·n) of
one counter-based stream (n = the factor's numel), so any row of any factor's basis can be generated alone.
When k·D ≤ ``cache_max_elements`` they are generated once and kept (non-persistent); otherwise they are
regenerated in chunks in forward and in backward (as the authors regenerate from a seed per step), so at
most one chunk exists at a time. A⁰ and the bases are built on first use (counting allocates only θ_d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, lora_style_init, register_projection
from lorazoo.projections.options import option

_STREAM = "nola/bases"
_CHUNK_ELEMENTS = {"cpu": 1 << 18}  # per generated chunk; an accelerator takes bigger ones
_CHUNK_ELEMENTS_DEVICE = 1 << 24


@dataclass(frozen=True)
class NOLAOptions:
    # k bases per factor: 512 in the authors' LLaMA-2 scripts (UCDvision/NOLA@e009fdc:
    # llama/scripts/finetune_llama2_alpaca_7b_nola.sh, --nola_num_basis 512)
    num_basis: int = option(512, positive=True, hint="paper: 512 (LLaMA-2)")
    cache_max_elements: int = option(1 << 24, low=0)  # keep the bases when k·D is at most this


@register_projection("nola")
class NOLAProjection(Projection):
    paper = PaperSettings(
        rank=16,
        lr=1e-3,
        alpha=4.0,
        dropout=0.0,
        weight_decay=0.0,
        source="NOLA LLaMA-2 7B Alpaca: r = 16, alpha 4, 512 bases, lr 1e-3, dropout 0, weight decay 0 "
        "(UCDvision/NOLA@e009fdc:llama/scripts/finetune_llama2_alpaca_7b_nola.sh: --lora_r 16 --lora_alpha 4 "
        "--nola_num_basis 512 --learning_rate 0.001 --lora_dropout 0.0 --weight_decay 0.0)",
    )
    Options = NOLAOptions
    is_linear = False  # affine: θ_D = P θ_d + A⁰ (the frozen kaiming offset of A)
    uses_alpha = True
    zero_at_init = True
    tiny_case = {"num_basis": 8}
    offset: torch.Tensor | None
    cached_bases: torch.Tensor | None

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        self.k = self.opts.num_basis
        self.sizes = layout.segment_sizes
        self.starts = [sum(self.sizes[:s]) for s in range(len(self.sizes))]
        # α_l, β_l per module in layout order (A_1, B_1, A_2, ...): zero, as the authors
        self.coefficients = nn.Parameter(torch.zeros(len(self.sizes) * self.k))
        self.register_buffer("offset", None, persistent=False)
        self.register_buffer("cached_bases", None, persistent=False)

    @property
    def cached(self) -> bool:
        return self.k * self.D <= self.opts.cache_max_elements

    def basis_rows(self, segment: int, start: int, stop: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Bases [start, stop) of θ_D segment ``segment`` as a (stop − start) × numel matrix, U(±1) / √k."""
        n = self.sizes[segment]
        values = rng.uniform_torch(
            self.config.seed, _STREAM, (stop - start) * n, -1.0, 1.0, self.k * self.starts[segment] + start * n, device
        )
        return values.div_(math.sqrt(self.k)).view(stop - start, n).to(dtype)

    def row_chunks(self, segment: int, device: torch.device) -> list[tuple[int, int]]:
        """(start, stop) bases per generated chunk of a segment."""
        rows = max(1, _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS_DEVICE) // max(self.sizes[segment], 1))
        return [(i, min(i + rows, self.k)) for i in range(0, self.k, rows)]

    def frozen_offset(self) -> torch.Tensor:
        """A⁰ in every A segment (U(±1/√in), PEFT LoRA's kaiming init) and 0 in every B segment."""
        c = self.coefficients
        if self.offset is None or self.offset.device != c.device or self.offset.dtype != c.dtype:
            self.offset = lora_style_init(self.layout, self.config.seed, "nola/A0").to(c.device, c.dtype)
        return self.offset

    def _bases(self) -> list[torch.Tensor]:
        """Every segment's k × numel basis matrix, generated once (the cached case)."""
        c = self.coefficients
        if self.cached_bases is None or self.cached_bases.device != c.device or self.cached_bases.dtype != c.dtype:
            parts = [self.basis_rows(s, 0, self.k, c.dtype, c.device).reshape(-1) for s in range(len(self.sizes))]
            self.cached_bases = torch.cat(parts) if parts else c.new_zeros(0)
        return [
            b.view(self.k, n) for b, n in zip(self.cached_bases.split([self.k * n for n in self.sizes]), self.sizes)
        ]

    def forward(self) -> torch.Tensor:
        coefficients = self.coefficients.view(len(self.sizes), self.k)
        if self.cached:
            mixed = torch.cat([c @ basis for c, basis in zip(coefficients.unbind(0), self._bases())])
        else:
            mixed = _StreamedMixture.apply(self.coefficients, self)
        return mixed + self.frozen_offset()

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        """A⁰ and the first and last bases of the first and last factor stand for the (streamed) bases."""
        device, dtype, last = self.coefficients.device, self.coefficients.dtype, len(self.sizes) - 1
        return {
            "A0": self.frozen_offset(),
            "first_bases": self.basis_rows(0, 0, min(2, self.k), dtype, device),
            "last_bases": self.basis_rows(last, max(0, self.k - 2), self.k, dtype, device),
        }


class _StreamedMixture(torch.autograd.Function):
    """Σ_i c_{s,i} basis_{s,i} for every segment s, and c̄_s = basis_s ḡ_s, with the bases regenerated chunk by
    chunk in both directions (never held whole)."""

    @staticmethod
    def forward(ctx: Any, coefficients: torch.Tensor, projection: NOLAProjection) -> torch.Tensor:
        ctx.projection = projection
        k, device, dtype = projection.k, coefficients.device, coefficients.dtype
        out = coefficients.new_zeros(projection.D)
        c = coefficients.view(-1, k)
        for s, (start, n) in enumerate(zip(projection.starts, projection.sizes)):
            for i, j in projection.row_chunks(s, device):
                out[start : start + n] += c[s, i:j] @ projection.basis_rows(s, i, j, dtype, device)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        projection = ctx.projection
        k, device, dtype = projection.k, grad_out.device, grad_out.dtype
        grad = grad_out.new_zeros(len(projection.sizes), k)
        for s, (start, n) in enumerate(zip(projection.starts, projection.sizes)):
            for i, j in projection.row_chunks(s, device):
                grad[s, i:j] = projection.basis_rows(s, i, j, dtype, device) @ grad_out[start : start + n]
        return grad.view(-1), None
