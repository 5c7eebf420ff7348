"""LoRA-XS (Bałazy, Banaei, Aberer & Tabor 2024, arXiv:2405.17604): a trainable r × r matrix between frozen
factors taken from the truncated SVD of the pretrained weight.

Per adapted module l, with W_l = U Σ Vᵀ (out × in, top r; svd.py) and a trainable R_l ∈ R^{r×r}:

    ΔW_l = s · U_r R_l Σ_r V_rᵀ,     s = α / r,     d = n_modules · r².

Where Σ goes is the authors' choice, read from their code (MohammadrezaBanaei/LoRA-XS@24efae6,
``utils/initialization_utils.py``): ``get_svd_replacement_module`` takes the SVD of Wᵀ (in × out) and folds Σ
into its left factor, which becomes lora_A (Σ_r V_rᵀ of W, the input side); lora_B is U_r; the r × r
``default_lora_latent_mapping`` sits between them, initialised N(0, σ = 1e-5) (``init_module_weights``), and
the PEFT LoRA scale α / r multiplies the result (``utils/latent_utils.py`` ``forward_latent``). So in
lorazoo's factor terms A_l = R_l Σ_r V_rᵀ (linear in R) and B_l = U_r (frozen): θ_D is affine in R, and
``matrix()`` is None. R ≠ 0 at init, so ΔW is small but not zero at init (as the authors').
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, register_projection
from lorazoo.projections.factors import Factor, concatenated
from lorazoo.projections.options import option
from lorazoo.projections.svd import SVDProjection


@dataclass(frozen=True)
class LoRAXSOptions:
    init_std: float = option(1e-5, positive=True, hint="authors: R ~ N(0, 1e-5)")


@register_projection("loraxs")
class LoRAXSProjection(SVDProjection):
    paper = PaperSettings(
        rank=64,
        lr=4e-3,
        alpha=64.0,
        dropout=0.0,
        weight_decay=0.0,
        source="the authors' math setting (Mistral-7B / Gemma-7B on MetaMathQA): r = 64, lr 4e-3, weight decay 0: "
        "MohammadrezaBanaei/LoRA-XS@9b5f1ef:scripts/run_math_tuning.sh (LORA_RANK=64, --learning_rate 4e-3, "
        "--weight_decay 0.); α = r and dropout 0, all linear layers: @0be0770:main_math_tuning.py (LoraConfig "
        "lora_alpha=lora_r, lora_dropout=0)",
    )
    Options = LoRAXSOptions
    uses_alpha = True
    zero_at_init = False

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        n, r = len(layout), config.rank
        values = rng.normal(config.seed, "loraxs/R", n * r * r) * self.opts.init_std
        self.R = nn.Parameter(rng.as_tensor(values).view(n, r, r))

    def pieces(self) -> tuple[Factor, ...]:
        """[A_1, B_1, ...] with A_l = R_l Σ_r V_rᵀ and B_l = U_r (flat)."""
        out: list[torch.Tensor] = []
        for r_l, (u, s, vh) in zip(self.R, self.svd_factors()):
            out += [((r_l * s) @ vh).reshape(-1), u.reshape(-1)]
        return tuple(out)

    def forward(self) -> torch.Tensor:
        return concatenated(self.pieces())
