"""RandLoRA (Albert et al. 2025, arXiv:2502.00987): full-rank updates from shared frozen random bases.

Every adapted module (m = min(in, out), M = max(in, out)) uses n = ⌈m / r⌉ rank-r bases, sliced from one pair
of frozen random matrices shared by the whole model, A_sh ∈ R^{r × m_max} and B_sh ∈ R^{M_max × n_max × r} (sized from the widest in and out, as PEFT);
it trains λ ∈ R^{r × n} and γ ∈ R^{n × m}, which scale the bases on the smaller side:

    S[i·n + b, j] = λ[i, b] · A_sh[i, j] · γ[b, j]        (S ∈ R^{n·r × m}, trained)
    L[:, b·r + i] = B_sh[:M, b, i]                          (L ∈ R^{M × n·r}, frozen)
    ΔW = (α / r) · L S         if in ≤ out  (A_l = S,  B_l = L)
    ΔW = (α / r) · Sᵀ Lᵀ       if in > out  (A_l = Lᵀ, B_l = Sᵀ)

so the factors have rank n·r ≥ m (``factor_rank``): the update can be full rank. This is PEFT 0.21's
``tuners/randlora`` value for value, including its pairing of S's rows (i, b) with L's columns (b, i) after
flattening. α / r is folded into S, the trained factor, so the layer scale is 1 and no scaled copy of a
frozen basis is made per forward. Init as PEFT: λ = 0 (ΔW = 0), γ = 1 / m.

A_sh and B_sh are U(±1) from the counter-based generator divided by their standard deviation (PEFT draws
kaiming-uniform from torch's generator and divides by the std: the same distribution, not the same
numbers, so parity tests copy PEFT's tensors). They are built lazily, on first use (counting builds the
projection without them), and regenerated from the seed rather than saved.

d = Σ_l n_l (r + m_l): tiny Llama q,v at r = 8 → 1,472 as PEFT (tests/projections/test_randlora.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.layout import Layout, LayoutEntry
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.factors import Factor, concatenated


def num_bases(in_features: int, out_features: int, rank: int) -> int:
    """n = ⌈min(in, out) / r⌉: enough rank-r bases to span the smaller side (PEFT's ``num_bases``)."""
    return math.ceil(min(in_features, out_features) / rank)


class ScaledBasis(torch.autograd.Function):
    """S = (λ[:, :, None] · A[:, None, :] · γ[None]).flatten(0, 1) · s, keeping only λ, A, γ for backward.

    Autograd's chain of broadcasts would keep (r × n × m) temporaries; this is PEFT's ``UniqueBaseGrad``
    (the same einsums), with the scale s applied to the result.
    """

    @staticmethod
    def forward(lam: torch.Tensor, basis: torch.Tensor, gamma: torch.Tensor, scale: float) -> torch.Tensor:
        return (lam[:, :, None] * basis[:, None, :] * gamma[None]).flatten(0, 1) * scale

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        lam, basis, gamma, scale = inputs
        ctx.save_for_backward(lam, basis, gamma)
        ctx.scale = scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None, None]:
        lam, basis, gamma = (t.to(grad.dtype) for t in ctx.saved_tensors)
        g = grad.reshape(lam.shape[0], lam.shape[1], -1) * ctx.scale
        grad_lam = torch.einsum("ibj,ij,bj->ib", g, basis, gamma) if ctx.needs_input_grad[0] else None
        grad_gamma = torch.einsum("ibj,ij,ib->bj", g, basis, lam) if ctx.needs_input_grad[2] else None
        return grad_lam, None, grad_gamma, None


@dataclass(frozen=True)
class RandLoRAOptions:
    """RandLoRA has no options beyond ``rank`` (PEFT's ``r``) and ``alpha`` (PEFT's ``randlora_alpha``)."""


@register_projection("randlora")
class RandLoRAProjection(Projection):
    paper = PaperSettings(
        rank=64,
        lr=1e-4,
        alpha=128.0,
        dropout=0.0,
        weight_decay=0.0,
        source="RandLoRA GLUE, RoBERTa-base: r = 64, lr 1e-4 (PaulAlbert31/RandLoRA@75cb6a0:GLUE/train_all.sh); "
        "alpha = 2r, dropout 0 (PaulAlbert31/RandLoRA@e31287f:GLUE/run_glue.py, RandLoraConfig(...)); weight decay "
        "0 (same file: transformers.AdamW default)",
    )
    Options = RandLoRAOptions
    is_linear = False  # bilinear in (λ, γ)
    uses_alpha = True  # α / r, folded into the trained factor (``scaling`` is 1)
    zero_at_init = True
    basis_A: torch.Tensor | None
    basis_B: torch.Tensor | None

    @classmethod
    def factor_rank(cls, in_features: int, out_features: int, rank: int) -> int:
        return num_bases(in_features, out_features, rank) * rank

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        r = config.rank
        for e in layout:
            if e.rank != self.factor_rank(e.in_features, e.out_features, r):
                raise ConfigError(
                    f"randlora: module {e.name!r} ({e.in_features} → {e.out_features}) has factor rank {e.rank}; "
                    f"RandLoRA's is n_bases · r = {self.factor_rank(e.in_features, e.out_features, r)}: build the "
                    "layout with lorazoo.projections.layout_rank(config)"
                )
        self.bases = [num_bases(e.in_features, e.out_features, r) for e in layout]
        self.small = [min(e.in_features, e.out_features) for e in layout]
        self.lambda_ = nn.Parameter(torch.zeros(sum(n * r for n in self.bases)))
        self.gamma = nn.Parameter(torch.cat([torch.full((n * m,), 1.0 / m) for n, m in zip(self.bases, self.small)]))
        # shared frozen bases, built on first use (see ``shared_bases``); never saved
        self.register_buffer("basis_A", None, persistent=False)
        self.register_buffer("basis_B", None, persistent=False)

    @property
    def scaling(self) -> float:
        """1: α / r is already inside the trained factor S."""
        return 1.0

    def shape_of_bases(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        """(r, m_max) and (M_max, n_max, r): the shared A_sh, B_sh every module slices.

        As PEFT's ``_find_dim``: from the largest in and out over all modules, m_max = min of the two and
        M_max = max of the two, n_max = ⌈m_max / r⌉.
        """
        r = self.config.rank
        widest_in = max(e.in_features for e in self.layout)
        widest_out = max(e.out_features for e in self.layout)
        small, big = min(widest_in, widest_out), max(widest_in, widest_out)
        return (r, small), (big, num_bases(small, small, r), r)

    def shared_bases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A_sh, B_sh (float32 on λ's device), generated from the seed the first time they are needed."""
        a, b = self.basis_A, self.basis_B
        device = self.lambda_.device
        if a is None or b is None or a.device != device:
            shape_a, shape_b = self.shape_of_bases()
            a = self.basis_A = _unit_std(self.config.seed, "randlora/A", shape_a).to(device)
            b = self.basis_B = _unit_std(self.config.seed, "randlora/B", shape_b).to(device)
        return a, b

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        a, b = self.shared_bases()
        return {"basis_A": a, "basis_B": b}

    def pieces(self) -> tuple[Factor, ...]:
        """[A_1, B_1, A_2, ...] with S formed once per forward (as PEFT) and L a slice of B_sh."""
        basis_a, basis_b = self.shared_bases()
        r, scale = self.config.rank, self.config.effective_alpha / self.config.rank
        lambdas = self.lambda_.split([n * r for n in self.bases])
        gammas = self.gamma.split([n * m for n, m in zip(self.bases, self.small)])
        out: list[Factor] = []
        for e, n, m, lam, gamma in zip(self.layout, self.bases, self.small, lambdas, gammas):
            s = ScaledBasis.apply(lam.view(r, n), basis_a[:, :m].to(lam.dtype), gamma.view(n, m), scale)
            big = basis_b[: max(e.in_features, e.out_features), :n, :].reshape(-1, n * r).to(lam.dtype)
            out.extend(_oriented(e, s, big))
        return tuple(out)

    def forward(self) -> torch.Tensor:
        return concatenated(self.pieces())


def _oriented(entry: LayoutEntry, small: torch.Tensor, big: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_l, B_l) from the trained S (n·r × m) and frozen L (M × n·r): S meets the smaller side."""
    if entry.in_features <= entry.out_features:
        return small, big
    return big.T, small.T


def _unit_std(seed: int, purpose: str, shape: tuple[int, ...]) -> torch.Tensor:
    """U(±1) values divided by their standard deviation, as PEFT normalises its kaiming draws."""
    values = rng.as_tensor(rng.uniform(seed, purpose, math.prod(shape), -1.0, 1.0)).view(shape)
    return values / values.std()
