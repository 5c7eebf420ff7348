"""VeRA (Kopiczko, Blankevoort & Asano 2024, arXiv:2310.11454): frozen shared random factors + trained scales.

One pair of frozen random matrices A_sh ∈ R^{r×h_max}, B_sh ∈ R^{o_max×r} serves every adapted layer;
layer l trains λ_d ∈ R^r and λ_b ∈ R^{o_l}:

    A_l = diag(λ_d) A_sh[:, :h_l],   B_l = diag(λ_b) B_sh[:o_l, :],   ΔW_l = B_l A_l  (s = 1).

θ_D is linear in the trained λ's, so ``matrix()`` exists. d = Σ_l (r + o_l): RoBERTa-base query+value
with r = 1024 gives 43,008 (the "0.043M" of the VeRA and VB-LoRA tables).

A_sh ~ U(±√(6/h_max)) and B_sh ~ U(±√(6/r)) (kaiming-uniform with gain √2, as PEFT) come from the
counter-based generator, so they are regenerated from the seed on any machine; they are saved with the
adapter only with ``save_projection: true``. λ_d starts at ``d_initial`` (0.1) and λ_b at 0, so ΔW = 0.
λ_d and λ_b are two flat parameters (layers in layout order). Each A_l, B_l reaches its layer as a
``ScaledRows`` (``pieces``, see sharing.py), applied as (x A_shᵀ) ⊙ λ_d: like PEFT's VeRA, never formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.factors import Factor, concatenated
from lorazoo.projections.options import option
from lorazoo.projections.sharing import scaled_factor_pieces, uniform_matrix


@dataclass(frozen=True)
class VeRAOptions:
    save_projection: bool = option(False)  # PEFT's default is True; ours regenerates A_sh, B_sh from the seed
    d_initial: float = option(0.1, hint="paper: 0.1")  # λ_d init (VeRA paper)


@register_projection("vera")
class VeRAProjection(Projection):
    paper = PaperSettings(
        rank=1024,
        lr=4e-3,
        source="VeRA (arXiv:2310.11454) Table 1: RoBERTa-base q,v r = 1024 (0.043M); Table 8: lr 4e-3 (SST-2)",
    )
    Options = VeRAOptions
    is_linear = True
    uses_alpha = False
    zero_at_init = True
    vera_A: torch.Tensor
    vera_B: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        d_initial = self.opts.d_initial
        r = config.rank
        h_max = max(e.in_features for e in layout)
        o_max = max(e.out_features for e in layout)
        self.register_buffer(
            "vera_A", uniform_matrix(config.seed, "vera/A", (r, h_max), np.sqrt(6.0 / h_max)), persistent=False
        )
        self.register_buffer(
            "vera_B", uniform_matrix(config.seed, "vera/B", (o_max, r), np.sqrt(6.0 / r)), persistent=False
        )
        self.lambda_d = nn.Parameter(torch.full((len(layout) * r,), float(d_initial)))
        self.lambda_b = nn.Parameter(torch.zeros(sum(e.out_features for e in layout)))
        self.out_sizes = [e.out_features for e in layout]

    def pieces(self) -> tuple[Factor, ...]:
        """[A_1, B_1, A_2, ...] with A_l = diag(λ_d,l) A_sh[:, :h_l], B_l = diag(λ_b,l) B_sh[:o_l, :]."""
        lambda_d = self.lambda_d.view(len(self.layout), self.config.rank).unbind(0)
        lambda_b = self.lambda_b.split(self.out_sizes)
        return tuple(
            piece
            for i, e in enumerate(self.layout)
            for piece in scaled_factor_pieces(
                lambda_d[i], self.vera_A[:, : e.in_features], lambda_b[i], self.vera_B[: e.out_features, :]
            )
        )

    def forward(self) -> torch.Tensor:
        return concatenated(self.pieces())

    def saved_buffer_names(self) -> set[str]:
        return {"vera_A", "vera_B"} if self.opts.save_projection else set()
