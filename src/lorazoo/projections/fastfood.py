"""Fastfood projection (Le, Sarlós & Smola 2013): a structured stand-in for a dense Gaussian P.

Used for intrinsic-dimension training by Li et al. 2018 and Aghajanyan et al. 2021, and as an
ablation in Uni-LoRA (Li et al. 2025). θ_d is zero-padded to L = 2^⌈log2 d⌉ and K = ⌈D/L⌉
independent blocks V_k = H G_k Π_k H B_k (L × L) are stacked, cut to D rows:

    B_k  random ±1 diagonal,  Π_k random permutation,  G_k N(0, 1) diagonal,
    H    the unnormalised Walsh–Hadamard matrix (H H = L I), applied in O(L log L).

Scaling as in the intrinsic-dimension code (divide by √(L‖G_k‖²) and by √(D/L)): a column of
H G Π H B has squared norm exactly L‖G‖², so each block then has unit-norm columns and the stacked,
cut matrix has columns of squared norm 1 (exactly when L divides D, ≈ 1 otherwise) — an isometry in
expectation, like the gaussian and unilora projections. The scale is folded into G. Le et al.'s
extra diagonal S (a chi-distributed row rescaling for kernel approximation) is omitted, as in those
intrinsic-dimension implementations; they use one block of size 2^⌈log2 D⌉, whereas stacking blocks
of size L (Le et al.'s construction) keeps the cost at O(D log d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.options import option


def walsh_hadamard(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised fast Walsh–Hadamard transform over the last axis (Sylvester order), batched.

    Equals ``x @ scipy.linalg.hadamard(L)``; differentiable (H is symmetric, so its adjoint is itself).
    """
    length = x.shape[-1]
    if length & (length - 1):
        raise ValueError(f"walsh_hadamard needs a power-of-two length, got {length}")
    batch = x.shape[:-1]
    half = 1
    while half < length:
        pairs = x.reshape(*batch, length // (2 * half), 2, half)
        a, b = pairs[..., 0, :], pairs[..., 1, :]
        x = torch.stack((a + b, a - b), dim=-2).reshape(*batch, length)
        half *= 2
    return x


def fastfood_structures(seed: int, D: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signs (K, L), flat gather indices of the per-block permutations (K·L,), scaled G (K, L)."""
    num_blocks = -(-D // block)
    total = num_blocks * block
    signs = rng.rademacher(seed, "fastfood/B", total).reshape(num_blocks, block)
    bits = rng.random_bits(seed, "fastfood/Pi", total).reshape(num_blocks, block)
    perm = np.argsort(bits, axis=1, kind="stable") + (np.arange(num_blocks) * block)[:, None]
    gauss = rng.normal(seed, "fastfood/G", total).reshape(num_blocks, block)
    gauss = gauss / np.sqrt((gauss**2).sum(axis=1, keepdims=True) * D)
    return signs, perm.reshape(-1).astype(np.int64), gauss


@dataclass(frozen=True)
class FastfoodOptions:
    d: int = option(
        23040, positive=True, high="D", high_name="D, the number of LoRA factor entries"
    )  # unilora's GLUE d
    # θ_d ~ U(±0.02) as unilora (θ_d = 0 would give A_l = B_l = 0 and zero gradients)
    init_range: float = option(0.02, positive=True)


@register_projection("fastfood")
class FastfoodProjection(Projection):
    paper = PaperSettings(
        rank=4,
        lr=5e-3,
        source="Uni-LoRA's GLUE setting (an ablation in arXiv:2506.00799): r = 4; θ lr 5e-3 from "
        "KaiyangLi1992/Uni-LoRA@3387a6e:NLU/NLU/scripts_unilora_qv/roberta_base_sst2.sh",
    )
    Options = FastfoodOptions
    is_linear = True
    tiny_case = {"d": 48}
    signs: torch.Tensor | None
    perm: torch.Tensor | None
    gauss: torch.Tensor | None

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        d = self.opts.d
        self.block = 1 << (d - 1).bit_length()
        self.num_blocks = math.ceil(layout.D / self.block)
        self.theta = self.small_uniform_theta(d)
        # O(D) structures, generated on first use so that building the projection (counting) is cheap
        for name in ("signs", "perm", "gauss"):
            self.register_buffer(name, None, persistent=False)

    def _structures(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        theta = self.theta
        if self.signs is None or self.signs.device != theta.device:
            signs, perm, gauss = fastfood_structures(self.config.seed, self.D, self.block)
            self.signs = rng.as_tensor(signs).to(theta.device)
            self.perm = torch.from_numpy(perm).to(theta.device)
            self.gauss = rng.as_tensor(gauss).to(theta.device)
        signs_t, perm_t, gauss_t = self.signs, self.perm, self.gauss
        assert signs_t is not None and perm_t is not None and gauss_t is not None  # generated together above
        return signs_t.to(theta.dtype), perm_t, gauss_t.to(theta.dtype)

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        """The lazily generated B, Π, G blocks (adapter checksums record a sample of each)."""
        return dict(zip(("signs", "perm", "gauss"), self._structures()))

    def forward(self) -> torch.Tensor:
        signs, perm, gauss = self._structures()
        x = F.pad(self.theta, (0, self.block - self.theta.numel())) * signs  # B_k x, (K, L)
        x = walsh_hadamard(x)
        x = x.reshape(-1).index_select(0, perm).view(self.num_blocks, self.block) * gauss  # G_k Π_k
        return walsh_hadamard(x).reshape(-1)[: self.D]

    def matrix(self) -> torch.Tensor:
        """Dense D × d matrix: the transform applied to the identity (for checks on small layouts)."""
        signs, perm, gauss = self._structures()
        d = self.theta.numel()
        eye = F.pad(torch.eye(d, dtype=self.theta.dtype, device=self.theta.device), (0, self.block - d))  # (d, L)
        x = walsh_hadamard(eye[:, None, :] * signs)  # (d, K, L)
        x = x.reshape(d, -1).index_select(1, perm).view(d, self.num_blocks, self.block) * gauss
        return walsh_hadamard(x).reshape(d, -1)[:, : self.D].T.contiguous()
