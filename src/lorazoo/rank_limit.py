"""Exported LoRA factors at a rank a server accepts: ΔW re-factorised by SVD, exactly or with a stated error.

A method's exact factors can have a rank no server takes (VeRA at r = 768 on SmolLM2; vLLM's max_lora_rank is
at most 512) although the ΔW = s·B·A they make has a much lower rank. ΔW is factorised again through its thin
SVD: B = Q_b R_b and Aᵀ = Q_a R_a (QR), then the small core R_b R_aᵀ = U Σ Vᵀ, so ΔW = (Q_b U) Σ (Q_a V)ᵀ
without forming ΔW. √Σ is folded into each new factor (B' = Q_b U √Σ, A' = √Σ Vᵀ Q_aᵀ), which keeps both
factors at the same scale for half-precision serving. Everything is computed in float64 and written in
float32, so a singular value below float32 resolution of ΔW (σ_i ≤ σ_1 · max(m, n) · ε_fp32, numpy's
matrix_rank rule at the precision of the written tensors) is not part of the rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lorazoo.errors import ConfigError

Factors = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
VLLM_MAX_LORA_RANK = 512  # vllm/config/lora.py: MaxLoRARanks = Literal[1, 8, ..., 320, 512]
EXPORT_RECORD = "lorazoo_export.json"  # what an export at a limited rank did (ranks, errors), beside README.md


@dataclass(frozen=True)
class ModuleCut:
    """One module's ΔW spectrum, as the export at ``max_rank`` sees it."""

    rank: int  # numerical rank of ΔW
    relative_error: float  # ‖ΔW − ΔW_k‖_F / ‖ΔW‖_F of the cut to k = min(rank, max_rank); 0 when exact
    a: torch.Tensor = field(repr=False)  # k × in (√Σ Vᵀ Q_aᵀ), float32
    b: torch.Tensor = field(repr=False)  # out × k (Q_b U √Σ), float32


def cut(a: torch.Tensor, b: torch.Tensor, max_rank: int) -> ModuleCut:
    """ΔW = b @ a re-factorised at rank ≤ max_rank (exact when rank(ΔW) ≤ max_rank)."""
    q_a, r_a = torch.linalg.qr(a.detach().double().T)
    q_b, r_b = torch.linalg.qr(b.detach().double())
    u, sigma, vh = torch.linalg.svd(r_b @ r_a.T)
    floor = float(sigma.max()) * max(b.shape[0], a.shape[1]) * torch.finfo(torch.float32).eps if len(sigma) else 0.0
    rank = int((sigma > floor).sum()) if floor > 0 else 0
    k = min(rank, max_rank)
    total = float(sigma.square().sum())
    error = math.sqrt(float(sigma[k:].square().sum()) / total) if total > 0 and k < rank else 0.0
    root = sigma[:k].sqrt()
    new_b = (q_b @ u[:, :k]) * root
    new_a = root[:, None] * (vh[:k] @ q_a.T)
    return ModuleCut(rank, error, new_a.float(), new_b.float())


def padded(cut_: ModuleCut, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) at exactly ``rank`` (zero rows of A / columns of B add nothing to ΔW): one r for every module."""
    extra = rank - cut_.a.shape[0]
    a = torch.cat([cut_.a, cut_.a.new_zeros(extra, cut_.a.shape[1])])
    b = torch.cat([cut_.b, cut_.b.new_zeros(cut_.b.shape[0], extra)], dim=1)
    return a, b


def check_max_rank(max_rank: object) -> int:
    if type(max_rank) is not int or max_rank < 1:
        raise ConfigError(
            f"max_rank={max_rank!r} is invalid; valid: a positive integer (vLLM serves up to {VLLM_MAX_LORA_RANK})"
        )
    return max_rank


def limit_rank(
    factors: Factors, max_rank: int, allow_truncation: bool = False
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int, dict[str, ModuleCut]]:
    """Every module's (A, s·B) re-factorised at one rank ≤ ``max_rank``: (factors, rank, per-module cuts).

    Refuses (one line, with the relative error an SVD cut would cause) when some ΔW has a higher rank,
    unless ``allow_truncation``; then the cut is made and the cuts carry each module's error.
    """
    cuts = {name: cut(a, b, max_rank) for name, (a, b) in factors.items()}
    over = {name: c for name, c in cuts.items() if c.rank > max_rank}
    if over and not allow_truncation:
        worst_name, worst = max(over.items(), key=lambda item: item[1].relative_error)
        highest = max(c.rank for c in over.values())
        raise ConfigError(
            f"max_rank={max_rank} cannot be met exactly: ΔW of {worst_name!r} has rank {worst.rank} and an SVD cut to "
            f"rank {max_rank} would change it by a relative (Frobenius) error of {worst.relative_error:.3g} (the worst "
            f"of {len(over)} module(s) over the limit); valid: max_rank >= {highest}, or allow_truncation=True"
        )
    rank = max(1, max(c.a.shape[0] for c in cuts.values()))
    return {name: padded(c, rank) for name, c in cuts.items()}, rank, cuts


def cut_record(max_rank: int, rank: int, cuts: Mapping[str, ModuleCut]) -> dict[str, object]:
    """What an export at ``max_rank`` did, for the exported adapter's lorazoo_export.json."""
    worst = max((c.relative_error for c in cuts.values()), default=0.0)
    return {
        "max_rank": max_rank,
        "rank": rank,
        "truncated": worst > 0,
        "max_relative_error": worst,
        "modules": {name: {"rank": c.rank, "relative_error": c.relative_error} for name, c in cuts.items()},
    }


def card_writer(record: Mapping[str, object]) -> Callable[[str], None]:
    """Writes README.md of an export at a limited rank (for io.atomic_write)."""

    def write(path: str) -> None:
        Path(path).write_text(model_card(record))

    return write


def model_card(record: Mapping[str, object]) -> str:
    """README.md of an export at a limited rank: says in words whether ΔW is exact or cut, and by how much."""
    rank, limit, error = record["rank"], record["max_rank"], record["max_relative_error"]
    if record["truncated"]:
        what = (
            f"TRUNCATED: ΔW was cut to rank {rank} by SVD (max_rank={limit}, allow_truncation=True); the largest "
            f"relative (Frobenius) change of a module's ΔW is {error:.3g}, so outputs differ from the lorazoo adapter."
        )
    else:
        what = f"Exact: every module's ΔW has rank <= {rank} and was re-factorised by SVD (max_rank={limit})."
    return f"# PEFT LoRA export from lorazoo\n\n{what}\nPer-module ranks and errors: {EXPORT_RECORD}.\n"
