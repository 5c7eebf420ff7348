"""Tied-LoRA (Renduchintala, Konuk & Kuchaiev 2023, arXiv:2311.09578): LoRA factors tied across layers.

Every layer of one module kind (all ``query``, all ``q_proj``...) shares A ∈ R^{r×h} and B ∈ R^{o×r};
layer l only owns two scaling vectors u_l ∈ R^r and v_l ∈ R^o:

    A_l = diag(u_l) A,   B_l = diag(v_l) B,   ΔW_l = (α/r) · B_l A_l.

The paper's configurations differ in which of A, B, u, v train (``train``); the default trains all
four (as we read the paper, the configuration it recommends). Per tied group of k layers that costs
r(h + o) + k(r + o) trainable numbers.

Init: ΔW = 0 by zeroing exactly one *trained* factor and keeping the others non-zero, so that its
gradient is not zero: v = 0 when v trains (the paper's choice: u = 1, A and B random), else B = 0,
else u = 0, else A = 0. Untrained vectors are 1 and untrained matrices random; they are buffers
regenerated from the seed, not saved. A ~ U(±1/√h), B ~ U(±1/√r) (kaiming-uniform, a = √5, as
PEFT's LoRA A) from the counter-based generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.layout import Layout, LayoutEntry
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.factors import Factor, concatenated
from lorazoo.projections.options import option
from lorazoo.projections.sharing import LayerGroups, scaled_factor_pieces, uniform_matrix

FACTORS = ("A", "B", "u", "v")
TRAIN_ALIASES = {"shared": ("A", "B"), "scales": ("u", "v")}
ZERO_INIT_PREFERENCE = ("v", "B", "u", "A")  # the first trained one starts at 0 so that ΔW = 0


def parse_train_option(value: Any) -> frozenset[str]:
    """``train`` as a set of factor names; ``shared`` means A and B, ``scales`` u and v."""
    valid = sorted([*FACTORS, *TRAIN_ALIASES])
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ConfigError(f"tied: train={value!r} is invalid; valid: a non-empty list from {valid}")
    items = [str(v) for v in value]
    unknown = sorted(set(items) - set(valid))
    if unknown or not items:
        raise ConfigError(f"tied: train={items!r} is invalid; valid: a non-empty list from {valid}")
    return frozenset(f for item in items for f in TRAIN_ALIASES.get(item, (item,)))


class TiedGroup(nn.Module):
    """Shared A (r × h), B (o × r) and per-layer u (k × r), v (k × o) of one module kind."""

    A: torch.Tensor
    B: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    def __init__(
        self,
        kind: str,
        k: int,
        in_features: int,
        out_features: int,
        rank: int,
        seed: int,
        train: frozenset[str],
        zero: str,
    ):
        super().__init__()
        self.kind = kind
        values = {
            "A": uniform_matrix(seed, f"tied/A/{kind}", (rank, in_features), 1.0 / np.sqrt(in_features)),
            "B": uniform_matrix(seed, f"tied/B/{kind}", (out_features, rank), 1.0 / np.sqrt(rank)),
            "u": torch.ones(k, rank),
            "v": torch.ones(k, out_features),
        }
        values[zero] = torch.zeros_like(values[zero])
        for name in FACTORS:
            if name in train:
                self.register_parameter(name, nn.Parameter(values[name]))
            else:
                self.register_buffer(name, values[name], persistent=False)

    def pieces(self, row: int) -> tuple[Factor, Factor]:
        """diag(u_l) A and diag(v_l) B of the group's ``row``-th layer (never multiplied out)."""
        return scaled_factor_pieces(self.u[row], self.A, self.v[row], self.B)


@dataclass(frozen=True)
class TiedOptions:
    # which of A, B, u, v train; all four is the configuration the paper recommends (as we read it)
    train: frozenset = option(["shared", "u", "v"], parse=lambda _name, value: parse_train_option(value))


@register_projection("tied")
class TiedProjection(Projection):
    paper = PaperSettings(
        rank=8,
        lr=1e-3,
        source="no paper value: Tied-LoRA (arXiv:2311.09578) has no GLUE runs; r = 8 matches the r = 8 LoRA row "
        "of the VB-LoRA comparison and lr 1e-3 is lorazoo's starting point",
    )
    Options = TiedOptions
    is_linear = False  # bilinear in (shared matrices, scales)
    uses_alpha = True
    zero_at_init = True

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        train = self.opts.train
        zero = next(f for f in ZERO_INIT_PREFERENCE if f in train)
        self.grouping = LayerGroups(layout, tie_key(layout))
        self.groups = nn.ModuleList()
        for kind, entries in zip(self.grouping.keys, self.grouping.entries):
            in_features, out_features = _common_shape(str(kind), entries)
            self.groups.append(
                TiedGroup(str(kind), len(entries), in_features, out_features, config.rank, config.seed, train, zero)
            )

    def pieces(self) -> tuple[Factor, ...]:
        """[A_1, B_1, A_2, ...] in layout order, each a ScaledRows (see sharing.py)."""
        return tuple(
            piece for g, row in self.grouping.placement for piece in cast(TiedGroup, self.groups[g]).pieces(row)
        )

    def forward(self) -> torch.Tensor:
        return concatenated(self.pieces())

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``shared`` (tied A, B) and ``scales`` (u, v), which may want different learning rates."""
        trainable = dict(self.named_trainable_parameters())
        groups = {
            "shared": [p for n, p in trainable.items() if n.endswith((".A", ".B"))],
            "scales": [p for n, p in trainable.items() if n.endswith((".u", ".v"))],
        }
        return {name: params for name, params in groups.items() if params}


def tie_key(layout: Layout) -> Callable[[LayoutEntry], str]:
    """Layers tie by module kind; a kind name worn by modules of different shapes (GPT-2's ``attn.c_proj``
    32→32 and ``mlp.c_proj`` 128→32) is several module types, tied per shape (``c_proj@128x32``)."""
    shapes: dict[str, set[tuple[int, int]]] = {}
    for e in layout:
        shapes.setdefault(e.kind, set()).add((e.in_features, e.out_features))

    def key(e: LayoutEntry) -> str:
        return e.kind if len(shapes[e.kind]) == 1 else f"{e.kind}@{e.in_features}x{e.out_features}"

    return key


def _common_shape(kind: str, entries: list[LayoutEntry]) -> tuple[int, int]:
    shapes = sorted({(e.in_features, e.out_features) for e in entries})
    if len(shapes) != 1:
        raise ConfigError(
            f"tied: layers of kind {kind!r} have different (in, out) shapes {shapes}; tied layers must share one "
            f"shape: target only modules whose kind has a single shape"
        )
    return shapes[0]
