"""The part LoRA-XS and TinyLoRA share: the truncated SVD of every adapted weight, kept with the adapter.

Both build their frozen factors from W_l = U Σ Vᵀ (W_l dense float32, out × in; top ``rank`` singular
triplets). An SVD is not bit-reproducible across BLAS builds and devices, and each singular pair may come
out with either sign, so recomputing it on load could silently give another ΔW. Hence:

* ``init_from_base`` (called by the lifecycle once, at attach) computes U_r, Σ_r, V_rᵀ and a sha256 of
  every SVD input; under ``torch.distributed`` rank 0's structures are broadcast, so every rank trains the
  same ΔW even on mixed hardware (every rank attaches, as the trainers do);
* all of it is saved with the adapter (``saved_buffer_names``), and loading uses the SAVED structures;
* ``check_base`` refuses, in one line, a base whose weight hashes differently from the one the SVD was
  taken of (another model, a different fine-tune, or the same weights in another dtype).

A projection built without a base (parameter counting on the meta device) holds uninitialised buffers;
every use of them before ``init_from_base`` or a load is refused rather than computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from lorazoo.config import AdapterConfig
from lorazoo.errors import AdapterStateError, ConfigError, LayoutMismatchError
from lorazoo.layout import Layout
from lorazoo.projections.base import Projection

SVD_BUFFERS = ("svd_U", "svd_S", "svd_Vh", "base_sha256")


def weight_digest(weight: torch.Tensor) -> torch.Tensor:
    """sha256 of a dense float32 weight (its shape and bytes) as 32 uint8 values."""
    values = weight.detach().to(torch.float32).contiguous().cpu()
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(values.numpy().data)
    return torch.frombuffer(bytearray(digest.digest()), dtype=torch.uint8)


class SVDProjection(Projection):
    """Base class of the weight-aware projections: U_r (out × r), Σ_r (r), V_rᵀ (r × in) per adapted module."""

    reads_base_weights = True
    svd_U: torch.Tensor
    svd_S: torch.Tensor
    svd_Vh: torch.Tensor
    base_sha256: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        for e in layout:
            if e.rank > min(e.in_features, e.out_features):
                raise ConfigError(
                    f"{self.name}: rank={e.rank} is invalid for module {e.name!r} ({e.out_features} × "
                    f"{e.in_features}); valid: rank <= {min(e.in_features, e.out_features)} (a truncated SVD "
                    "has at most min(out, in) singular triplets)"
                )
        # torch.empty: a meta-device count never touches these pages; ``_from_base`` guards every read
        self.register_buffer("svd_U", torch.empty(sum(e.b_numel for e in layout)), persistent=False)
        self.register_buffer("svd_S", torch.empty(sum(e.rank for e in layout)), persistent=False)
        self.register_buffer("svd_Vh", torch.empty(sum(e.a_numel for e in layout)), persistent=False)
        self.register_buffer("base_sha256", torch.zeros(len(layout), 32, dtype=torch.uint8), persistent=False)
        self._from_base = False

    def svd_factors(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(U_r, Σ_r, V_rᵀ) of every module in layout order: views of the buffers (no copy)."""
        if not self._from_base:
            raise AdapterStateError(
                f"{self.name}: the SVD of the base weights is not computed; build the adapter with "
                "lorazoo.attach / add_adapter (which read the base) or load a saved one with load_adapter"
            )
        return self._views()

    def _views(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        layout = self.layout
        us = self.svd_U.split([e.b_numel for e in layout])
        ss = self.svd_S.split([e.rank for e in layout])
        vhs = self.svd_Vh.split([e.a_numel for e in layout])
        return [
            (u.view(e.out_features, e.rank), s, vh.view(e.rank, e.in_features))
            for e, u, s, vh in zip(layout, us, ss, vhs)
        ]

    @torch.no_grad()
    def init_from_base(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        views = self._views()
        seen = 0
        for index, (entry, (name, weight)) in enumerate(zip(self.layout, weights)):
            if name != entry.name or tuple(weight.shape) != (entry.out_features, entry.in_features):
                raise LayoutMismatchError(
                    f"{self.name}: base weight {name!r} {tuple(weight.shape)} does not fit layout entry "
                    f"{entry.name!r} ({entry.out_features} × {entry.in_features})"
                )
            u, s, vh = torch.linalg.svd(weight.to(torch.float32), full_matrices=False)
            r = entry.rank
            for target, value in zip(views[index], (u[:, :r], s[:r], vh[:r])):
                target.copy_(value)
            self.base_sha256[index].copy_(weight_digest(weight))
            seen += 1
        if seen != len(self.layout):
            raise LayoutMismatchError(f"{self.name}: got {seen} base weights for {len(self.layout)} adapted modules")
        _broadcast_from_rank_zero([self.svd_U, self.svd_S, self.svd_Vh, self.base_sha256])
        self._from_base = True

    @torch.no_grad()
    def check_base(self, weights: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
        for index, (name, weight) in enumerate(weights):
            saved, here = self.base_sha256[index].cpu(), weight_digest(weight)
            if not torch.equal(saved, here):
                raise LayoutMismatchError(
                    f"{where}: module {name!r} of this base is not the weight {self.name} took its SVD from "
                    f"(sha256 {bytes(saved.tolist()).hex()[:12]}… saved, {bytes(here.tolist()).hex()[:12]}… here); "
                    "load the adapter onto the base it was trained on (the same weights, in the same dtype)"
                )

    def check_same_base(self, live: Projection, where: str) -> None:
        recorded = getattr(live, "base_sha256", None)
        if self.layout != live.layout or not isinstance(recorded, torch.Tensor):
            return
        for entry, saved, here in zip(self.layout, self.base_sha256, recorded):
            if not torch.equal(saved.cpu(), here.cpu()):
                raise LayoutMismatchError(
                    f"{where}: module {entry.name!r} was saved from another base than the active adapter's "
                    f"(sha256 {bytes(saved.tolist()).hex()[:12]}… vs {bytes(here.tolist()).hex()[:12]}…); "
                    "load it onto the base it was trained on with load_adapter"
                )

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_adapter_state_dict(tensors)
        self._from_base = True  # the saved structures, never a recomputed SVD

    def saved_buffer_names(self) -> set[str]:
        return set(SVD_BUFFERS)

    def stored_numel(self) -> int:
        """The trained parameters plus U_r, Σ_r, V_rᵀ: an adapter file needs them (the papers count only the
        trained part, as ``trainable`` does, assuming the SVD can be redone; see the module docstring)."""
        return self.d + self.svd_U.numel() + self.svd_S.numel() + self.svd_Vh.numel()


def _broadcast_from_rank_zero(tensors: list[torch.Tensor]) -> None:
    """Every rank takes rank 0's copy (a collective: every rank must attach the adapter)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return
    for tensor in tensors:
        dist.broadcast(tensor, src=0)
