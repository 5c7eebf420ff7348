"""PRoLoRA (Wang et al., ACL 2024, arXiv:2402.16902): intra-layer sharing by broadcast and rotation.

Rank r = (r − u) shared + u unshared, shared FIRST as in the authors' code (``de_reduce`` in
modules/chunkwise_sharing_LoRA.py): A_l = [A_s ; A_u], B_l = [B_s | B_u] with A_u ∈ R^{u×h},
B_u ∈ R^{o×u} free, and with R = r − u:

    A_s = cat_k roll(A_0, −k·s_A, dims=0) along h, cut to h;  A_0 ∈ R^{R×⌈h/m⌉}, s_A = max(⌊R/m⌋, 1)
    B_s = cat_k roll(B_0, −k·s_B, dims=1) along o, cut to o;  B_0 ∈ R^{⌈o/n⌉×R}, s_B = max(⌊R/n⌋, 1)

ΔW_l = (α/r) B_l A_l. Parameters per layer: u(h + o) + R(⌈h/m⌉ + ⌈o/n⌉). θ_D is a 0/1 copy of θ_d,
so the whole model is one gather θ_D = θ_d[index] (backward: one scatter-add) and ``matrix()`` is a
sparse 0/1 matrix. θ_d is, per layer in layout order, [vec(A_0), vec(A_u), vec(B_0), vec(B_u)]
(row-major), so u = r gives θ_d = θ_D: plain LoRA, with the same init bit for bit.

Rectified init: A_0 and A_u entries U(±1/√h) with the FULL h (kaiming-uniform, a = √5), B = 0; the
values are LoRA's init at the θ_D positions each parameter first appears in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout, LayoutEntry
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.options import option


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class LayerPlan:
    """Sizes, shifts and θ_d offsets of one layer's four parts (A_0, A_u, B_0, B_u)."""

    def __init__(self, entry: LayoutEntry, unshared: int, m: int, n: int, d_offset: int):
        self.entry, self.u, self.R = entry, unshared, entry.rank - unshared
        h, o = entry.in_features, entry.out_features
        self.chunk_a, self.chunk_b = ceil_div(h, m), ceil_div(o, n)
        self.shift_a, self.shift_b = max(self.R // m, 1), max(self.R // n, 1)
        sizes = [self.R * self.chunk_a, self.u * h, self.chunk_b * self.R, o * self.u]
        self.offsets = list(d_offset + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64))
        self.numel = int(sum(sizes))

    def index(self) -> np.ndarray:
        """θ_d position read by every entry of [vec(A_l), vec(B_l)] (the layer's slice of θ_D)."""
        e, R = self.entry, self.R
        h, o, r = e.in_features, e.out_features, e.rank
        a0, au, b0, bu = self.offsets
        row, col = np.meshgrid(np.arange(r), np.arange(h), indexing="ij")
        chunk, within = col // self.chunk_a, col % self.chunk_a
        source_row = (row + chunk * self.shift_a) % max(R, 1)  # roll(A_0, −k·s_A, dims=0)[i] = A_0[(i + k·s_A) mod R]
        a_index = np.where(row < R, a0 + source_row * self.chunk_a + within, au + (row - R) * h + col)
        row, col = np.meshgrid(np.arange(o), np.arange(r), indexing="ij")
        chunk, within = row // self.chunk_b, row % self.chunk_b
        source_col = (col + chunk * self.shift_b) % max(R, 1)
        b_index = np.where(col < R, b0 + within * R + source_col, bu + row * self.u + (col - R))
        return np.concatenate([a_index.reshape(-1), b_index.reshape(-1)]).astype(np.int64)

    def init(self, theta_D: torch.Tensor) -> torch.Tensor:
        """θ_d values: each parameter takes LoRA's init at its first (k = 0) position in θ_D."""
        e, R = self.entry, self.R
        a = theta_D[e.a_offset : e.a_offset + e.a_numel].view(e.rank, e.in_features)
        b = theta_D[e.b_offset : e.b_offset + e.b_numel].view(e.out_features, e.rank)
        return torch.cat(
            [
                a[:R, : self.chunk_a].reshape(-1),
                a[R:].reshape(-1),
                b[: self.chunk_b, :R].reshape(-1),
                b[:, R:].reshape(-1),
            ]
        )


@dataclass(frozen=True)
class PRoLoRAOptions:
    unshared_rank: int = option(1, low=0, high="rank", high_name="rank")  # u; u = rank is plain LoRA
    m: int = option(2, positive=True)  # copies of A_0 along in-features
    n: int = option(2, positive=True)  # copies of B_0 along out-features


@register_projection("prolora")
class PRoLoRAProjection(Projection):
    paper = PaperSettings(
        rank=8,
        alpha=16,
        dropout=0.1,
        lr=2e-4,
        source="α 16, dropout 0.1, weight decay 0: Forence1999/PRoLoRA@2e2b1ee:ft_llama2_7b_superni_mmlu.sh; r = 8 "
        "and lr 2e-4 are lorazoo's choice (the scripts take them as arguments; configs/experiment/SOURCES.md)",
    )
    Options = PRoLoRAOptions
    is_linear = True
    uses_alpha = True
    zero_at_init = True
    tiny_case = {"unshared_rank": 1, "m": 2, "n": 2}
    index: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        unshared, m, n = self.opts.unshared_rank, self.opts.m, self.opts.n
        self.plans: list[LayerPlan] = []
        offset = 0
        for entry in layout:
            self.plans.append(LayerPlan(entry, unshared, m, n, offset))
            offset += self.plans[-1].numel
        lora_theta = self.lora_init()
        self.theta = nn.Parameter(torch.cat([p.init(lora_theta) for p in self.plans]) if self.plans else lora_theta)
        index = np.concatenate([p.index() for p in self.plans]) if self.plans else np.zeros(0, dtype=np.int64)
        # u = r: θ_d is θ_D itself (plain LoRA), no gather at all
        self.identity = bool(np.array_equal(index, np.arange(layout.D)))
        self.register_buffer("index", torch.from_numpy(index), persistent=False)

    def forward(self) -> torch.Tensor:
        if self.identity:
            return self.theta
        return self.theta.index_select(0, self.index)

    def matrix(self) -> torch.Tensor:
        rows = torch.arange(self.D, device=self.index.device)
        values = torch.ones(self.D, dtype=self.theta.dtype, device=self.index.device)
        return torch.sparse_coo_tensor(
            torch.stack([rows, self.index]), values, (self.D, self.theta.numel()), check_invariants=False
        ).coalesce()
