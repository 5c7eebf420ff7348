"""θ_D once per model forward, and the adapted Linear that reads its A_l, B_l as views.

The model's top-level forward pre-hook calls ``ThetaCache.refresh``: the active projection runs once and
hands over θ_D as its segments [A_1, B_1, A_2, ...] (``Projection.pieces``: by default one ``split``, whose
backward is one concatenation), and each AdaptedLinear reshapes its two pieces.
Under ``torch.no_grad`` (generation) the pieces are reused
until a projection parameter changes, so decoding costs nothing extra per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layout import Layout, LayoutEntry
from .projections.base import Projection


@dataclass(frozen=True)
class LayerSlot:
    """What the active adapter asks of one layer: where its factors are and how to scale them."""

    piece: int  # index of A_l in the split θ_D; B_l is piece + 1
    rank: int
    in_features: int
    out_features: int
    scaling: float
    dropout: float

    @classmethod
    def from_entry(cls, index: int, entry: LayoutEntry, scaling: float, dropout: float) -> "LayerSlot":
        return cls(2 * index, entry.rank, entry.in_features, entry.out_features, scaling, dropout)


class ThetaCache:
    """Holds the split θ_D of the active adapter for the current forward (shared by all layers)."""

    def __init__(self) -> None:
        self.pieces: tuple[torch.Tensor, ...] | None = None
        self.disabled = False
        self.active_adapter: str | None = None
        self._no_grad_key: tuple | None = None

    def refresh(self, projection: Projection, layout: Layout) -> None:
        if torch.is_grad_enabled():
            key = None
        else:
            key = (id(projection),) + tuple((t.data_ptr(), t._version) for t in projection.parameters())
            if key == self._no_grad_key and self.pieces is not None:
                return
        self.pieces = None  # drop the previous step's θ_D before building this one (never two alive)
        self.pieces = projection.pieces()
        self._no_grad_key = key

    def invalidate(self) -> None:
        self.pieces, self._no_grad_key = None, None

    def factors(self, slot: LayerSlot) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pieces is None:
            raise RuntimeError("θ_D was not computed: call the adapted model (not a submodule) so its pre-hook runs")
        a = self.pieces[slot.piece].view(slot.rank, slot.in_features)
        b = self.pieces[slot.piece + 1].view(slot.out_features, slot.rank)
        return a, b


def factors_from_theta(theta_D: torch.Tensor, entry: LayoutEntry) -> tuple[torch.Tensor, torch.Tensor]:
    """A_l (r × in) and B_l (out × r) of one entry, as views of a flat θ_D."""
    a = theta_D[entry.a_offset : entry.a_offset + entry.a_numel].view(entry.rank, entry.in_features)
    b = theta_D[entry.b_offset : entry.b_offset + entry.b_numel].view(entry.out_features, entry.rank)
    return a, b


class AdaptedLinear(nn.Module):
    """y = W x + s · B_l (A_l (dropout(x))), with A_l, B_l views into the shared θ_D."""

    def __init__(self, base_layer: nn.Linear, module_name: str, cache: ThetaCache):
        super().__init__()
        self.base_layer = base_layer
        self.module_name = module_name
        self.cache = cache
        self.slot: LayerSlot | None = None
        self.merged = False

    # transformers code sometimes reads these off the module it thinks is a Linear
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        slot = self.slot
        if slot is None or self.merged or self.cache.disabled:
            return out
        a, b = self.cache.factors(slot)
        if slot.scaling != 1.0:
            b = b * slot.scaling
        h = x.to(a.dtype)
        if slot.dropout > 0.0 and self.training:
            h = F.dropout(h, slot.dropout, training=True)
        return out + F.linear(F.linear(h, a), b).to(out.dtype)

    def extra_repr(self) -> str:
        return f"{self.module_name}, slot={self.slot}, merged={self.merged}"
