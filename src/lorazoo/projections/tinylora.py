"""TinyLoRA (Morris et al. 2026, "Learning to Reason in 13 Parameters", arXiv:2602.04118), as PEFT 0.21 builds it.

Per adapted module l, from the truncated SVD of its frozen weight W_l = U Σ Vᵀ (top r; svd.py) and u fixed
random matrices P_l,1..u ∈ R^{r×r}:

    R_l = Σ_i v_g(l),i P_l,i,     ΔW_l = (U_r √Σ_r) R_l (√Σ_r V_rᵀ)      (s = 1, no α/r)

with the trainable v_g ∈ R^u shared by the modules of tying group g. In lorazoo's factor terms
A_l = R_l √Σ_r V_rᵀ (r × in, linear in v) and B_l = U_r √Σ_r (out × r, frozen, weight-derived): θ_D is
affine in v, not linear, so ``matrix()`` is None. PEFT's choices, kept here (peft 0.21
``tuners/tinylora/layer.py`` and ``model.py``): Σ split as √Σ on both sides; P ~ N(0, 1/r); v = 0 at init
(``init_weights=True``) or U(±``init_v_bound``) (``"uniform"``); ``weight_tying`` t ∈ [0, 1] makes
G = max(1, round(n·(1 − t))) groups of n // G consecutive modules (the last takes the rest), so t = 0 is
one v per module and t = 1 one v for the model. d = G · u: a tiny Llama's q,v (n = 4) with u = 8 gives 32
(t = 0) or 8 (t = 1), PEFT's counts.

Differences from PEFT, on purpose: P comes from lorazoo's counter-based generator (regenerated from the
seed on any machine and checksummed; PEFT seeds torch's CPU generator with projection_seed + layer
index), a rank above min(out, in) is refused instead of silently lowered, and an embedding's SVD is the
one of its (dim × vocab) out × in weight like every other module (PEFT factors the (vocab × dim) table,
which amounts to P transposed there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, register_projection
from lorazoo.projections.factors import Factor, concatenated
from lorazoo.projections.options import option
from lorazoo.projections.svd import SVDProjection


def _tying_ratio(projection: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(
            f"{projection}: weight_tying={value!r} is invalid; valid: a number in [0, 1] "
            "(0 = one v per module, 1 = one v shared by all)"
        )
    return float(value)


def tying_groups(num_modules: int, weight_tying: float) -> list[int]:
    """The v group of each module in layout order, as PEFT's TinyLoraModel._create_and_replace assigns it."""
    groups = max(1, round(num_modules * (1.0 - weight_tying)))
    size = max(1, num_modules // groups)
    return [min(index // size, groups - 1) for index in range(num_modules)]


@dataclass(frozen=True)
class TinyLoRAOptions:
    u: int = option(64, positive=True, hint="PEFT default 64; the paper's 13-parameter run: u = 13, weight_tying 1")
    weight_tying: float = option(0.0, parse=_tying_ratio)
    init_weights: bool | str = option(True, choices=[True, "uniform"])  # True: v = 0 (ΔW = 0), as PEFT
    init_v_bound: float = option(0.02, positive=True)  # U(±bound) for init_weights="uniform" (PEFT's default)
    save_projection: bool = option(False)  # PEFT's default is True; ours regenerates P from the seed


@register_projection("tinylora")
class TinyLoRAProjection(SVDProjection):
    paper = PaperSettings(
        rank=2,
        lr=1e-3,
        source="r = 2: peft 0.21 TinyLoraConfig default ('The paper recommends r=2'); u = 64, dropout 0 and "
        "lr 1e-3: huggingface/peft@c52c26a:method_comparison/MetaMathQA/experiments/tinylora/"
        "llama-3.2-3B-weight-tying (adapter_config.json: r 2, u 64, tinylora_dropout 0; training_params.json: "
        "lr 1e-3); weight decay: not set there (0 here)",
    )
    Options = TinyLoRAOptions
    uses_alpha = False
    zero_at_init = True
    tiny_case = {"u": 4}
    P: torch.Tensor
    group_of: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        u, r, n = self.opts.u, config.rank, len(layout)
        groups = tying_groups(n, self.opts.weight_tying)
        size = (max(groups) + 1 if groups else 0) * u
        if self.opts.init_weights == "uniform":
            bound = self.opts.init_v_bound
            v = rng.as_tensor(rng.uniform(config.seed, "tinylora/v", size, -bound, bound))
        else:
            v = torch.zeros(size)
        self.v = nn.Parameter(v.view(-1, u))
        p = rng.normal(config.seed, "tinylora/P", n * u * r * r) / math.sqrt(r)  # N(0, 1/r), as PEFT
        self.register_buffer("P", rng.as_tensor(p).view(n, u, r, r), persistent=False)
        self.register_buffer("group_of", torch.tensor(groups, dtype=torch.long), persistent=False)

    def pieces(self) -> tuple[Factor, ...]:
        """[A_1, B_1, ...] with A_l = R_l √Σ V_rᵀ and B_l = U_r √Σ (flat)."""
        svd = self.svd_factors()
        rs = torch.einsum("lu,luij->lij", self.v.index_select(0, self.group_of), self.P.to(self.v.dtype))
        out: list[torch.Tensor] = []
        for r_l, (u, s, vh) in zip(rs, svd):
            root = s.sqrt()
            out += [((r_l * root) @ vh).reshape(-1), (u * root).reshape(-1)]
        return tuple(out)

    def forward(self) -> torch.Tensor:
        return concatenated(self.pieces())

    def saved_buffer_names(self) -> set[str]:
        return super().saved_buffer_names() | ({"P"} if self.opts.save_projection else set())
