"""θ_D once per model forward, and the adapted layers (Linear, Conv1D, Embedding) that read A_l, B_l as views.

The model's top-level forward pre-hook calls ``ThetaCache.refresh``: the active projection runs once and
hands over θ_D as its segments [A_1, B_1, A_2, ...] (``Projection.pieces``: by default one ``split``, whose
backward is one concatenation; for tied and vera, ``ScaledRows`` that are never multiplied out), and each
adapted layer applies its two pieces through ``projections.factors`` (``linear``, ``embedding``).
Under ``torch.no_grad`` (generation) the pieces are reused
until a projection parameter changes, so decoding costs nothing extra per token.
A layer also folds its ΔW into its base weight and back (``fold``, ``fold_deltas``: merge / unmerge), in the
weight's orientation (Conv1D and Embedding store it transposed) and format (bitsandbytes weights requantised).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from lorazoo.errors import AdapterStateError
from lorazoo.layout import Layout, LayoutEntry
from lorazoo.projections import factors
from lorazoo.projections.base import Projection
from lorazoo.projections.factors import Factor
from lorazoo.quantized import check_requantizable, dequantized_weight, quantization_of, requantize_
from lorazoo.sharding import add_into, full, gathered


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
    def from_entry(cls, index: int, entry: LayoutEntry, scaling: float, dropout: float) -> LayerSlot:
        return cls(2 * index, entry.rank, entry.in_features, entry.out_features, scaling, dropout)


class MixedBatch:
    """One forward's ``adapter_names``: which rows each adapter owns and every adapter's layer slots.

    ``expandable``: inside ``generate``, transformers repeats each row ``k`` times in place
    (``repeat_interleave``) for beams / several return sequences, so a layer may see ``k·rows`` rows.
    """

    def __init__(self, names: list[str], slots: dict[str, dict[str, LayerSlot]], expandable: bool = False):
        self.names = list(names)
        self.slots = slots
        self.expandable = expandable
        self._groups: dict[tuple[int, str], list[tuple[str, torch.Tensor]]] = {}

    def groups(self, batch: int, device: torch.device, where: str) -> list[tuple[str, torch.Tensor]]:
        """(adapter, row indices) of every adapter with rows, for a layer input of ``batch`` rows."""
        key = (batch, str(device))
        if key not in self._groups:
            rows = len(self.names)
            if batch != rows and not (self.expandable and batch % rows == 0):
                raise AdapterStateError(
                    f"adapter_names has {rows} entries but {where} got a batch of {batch} rows; give one name per row"
                )
            repeat = batch // rows
            names = [n for n in self.names for _ in range(repeat)]
            by_name: dict[str, list[int]] = {}
            for row, name in enumerate(names):
                by_name.setdefault(name, []).append(row)
            self._groups[key] = [
                (name, torch.tensor(index, device=device)) for name, index in by_name.items() if name in self.slots
            ]
        return self._groups[key]


class ThetaCache:
    """The split θ_D of the adapter(s) the current forward uses (shared by all layers).

    One adapter normally (``pieces``); for a mixed batch, every adapter named in it (``mixed_pieces``),
    each computed once per forward.
    """

    def __init__(self) -> None:
        self.pieces: tuple[Factor, ...] | None = None
        self.disabled = False
        self.active_adapter: str | None = None
        self.mixed: MixedBatch | None = None
        self.mixed_pieces: dict[str, tuple[Factor, ...]] = {}
        self._no_grad_keys: dict[str, tuple] = {}
        self._stored: dict[str, tuple[Factor, ...]] = {}

    def _compute(self, cache_name: str, projection: Projection) -> tuple[Factor, ...]:
        """θ_D split into factors; under ``no_grad`` reused until a projection parameter changes."""
        key = None
        if not torch.is_grad_enabled():
            key = (id(projection),) + tuple((t.data_ptr(), t._version) for t in projection.parameters())
            if self._no_grad_keys.get(cache_name) == key and cache_name in self._stored:
                return self._stored[cache_name]
        self._stored.pop(cache_name, None)  # drop the previous step's θ_D before building this one (never two alive)
        self._no_grad_keys.pop(cache_name, None)
        pieces = projection.pieces()
        self._stored[cache_name] = pieces
        if key is not None:
            self._no_grad_keys[cache_name] = key
        return pieces

    def refresh(self, projection: Projection) -> None:
        self.pieces, self.mixed, self.mixed_pieces = None, None, {}
        self.pieces = self._compute(" active", projection)

    def refresh_mixed(self, mixed: MixedBatch, projections: dict[str, Projection]) -> None:
        """θ_D of every adapter the mixed batch names (``projections``), once each."""
        self.pieces, self.mixed, self.mixed_pieces = None, mixed, {}
        self.mixed_pieces = {name: self._compute(name, p) for name, p in projections.items()}

    def invalidate(self) -> None:
        self.pieces, self.mixed, self.mixed_pieces = None, None, {}
        self._no_grad_keys, self._stored = {}, {}

    def factors(self, slot: LayerSlot, adapter: str | None = None) -> tuple[Factor, Factor]:
        pieces = self.pieces if adapter is None else self.mixed_pieces.get(adapter)
        if pieces is None:
            raise RuntimeError("θ_D was not computed: call the adapted model (not a submodule) so its pre-hook runs")
        a = factors.as_matrix(pieces[slot.piece], slot.rank, slot.in_features)
        b = factors.as_matrix(pieces[slot.piece + 1], slot.out_features, slot.rank)
        return a, b


def factors_from_theta(theta_D: torch.Tensor, entry: LayoutEntry) -> tuple[torch.Tensor, torch.Tensor]:
    """A_l (r × in) and B_l (out × r) of one entry, as views of a flat θ_D."""
    a = theta_D[entry.a_offset : entry.a_offset + entry.a_numel].view(entry.rank, entry.in_features)
    b = theta_D[entry.b_offset : entry.b_offset + entry.b_numel].view(entry.out_features, entry.rank)
    return a, b


def _conv1d_type() -> type | None:
    """transformers' GPT-2-style Conv1D (weight stored in × out), if transformers is loaded at all.

    A model holding a Conv1D has imported it already, so this never pays transformers' import time.
    """
    module = sys.modules.get("transformers.pytorch_utils")
    return getattr(module, "Conv1D", None) if module is not None else None


class AdaptedLayer(nn.Module):
    """y = base(x) + s · B_l A_l x, with A_l, B_l views into the shared θ_D.

    The layout records every target as (in, out) with A_l (r × in), B_l (out × r) and ΔW_l = B_l A_l
    (out × in); a subclass knows how its base layer stores the weight (``weight_delta``), how an input
    meets A_l (``lora_output``) and how PEFT names its factors (export).
    """

    base_types: tuple[type, ...] = ()
    peft_factor_keys = ("lora_A.weight", "lora_B.weight")
    fan_in_fan_out = False

    def __init__(self, base_layer: nn.Module, module_name: str, cache: ThetaCache):
        super().__init__()
        self.base_layer = base_layer
        self.module_name = module_name
        self.cache = cache
        self.slot: LayerSlot | None = None
        self.merged = False

    @staticmethod
    def features(module: nn.Module) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    # transformers code sometimes reads these off the module it thinks is the original layer
    @property
    def weight(self) -> torch.Tensor:
        return cast(torch.Tensor, self.base_layer.weight)

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def weight_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """ΔW (out × in, the layout's orientation) as it adds onto ``base_layer.weight``."""
        return delta

    @torch.no_grad()
    def add_to_weight(self, delta: torch.Tensor) -> float | None:
        """W += ΔW (out × in, float) in the weight's orientation and dtype.

        A bitsandbytes 4-/8-bit weight is dequantised, summed and requantised (quantized.py states the
        error bound); the achieved max |stored − exact| is returned for it, None for a float weight.
        """
        if quantization_of(self.base_layer) is not None:
            exact = self._merged_value(delta)
            requantize_(self.base_layer, exact)
            return float((dequantized_weight(self.base_layer) - exact).abs().max())
        # a sharded (FSDP) weight: each rank its shard
        add_into(cast(torch.Tensor, self.base_layer.weight), self.weight_delta(delta))
        return None

    @torch.no_grad()
    def check_add_to_weight(self, delta: torch.Tensor) -> None:
        """Refuse before anything changes if W + ΔW cannot be stored within its format's bound (a quantised
        weight, see ``quantized.check_requantizable``); a float weight always can."""
        if quantization_of(self.base_layer) is not None:
            check_requantizable(self.base_layer, self._merged_value(delta), self.module_name)

    def _merged_value(self, delta: torch.Tensor) -> torch.Tensor:
        return dequantized_weight(self.base_layer) + self.weight_delta(delta).to(self.weight.device)

    def check_fold(self, a: torch.Tensor, b: torch.Tensor, sign: int) -> None:
        """``check_add_to_weight`` for ``fold``'s ΔW, computed only where a check is needed (a quantised weight)."""
        if quantization_of(self.base_layer) is not None:
            self.check_add_to_weight(sign * (b.float() @ a.float()))

    def fold(self, a: torch.Tensor, b: torch.Tensor, sign: int) -> float | None:
        """Merge (``sign`` +1: W += B A, the scale already in ``b``) or unmerge (-1) this layer's ΔW; the product
        is formed in float32 whatever the factors' dtype, then stored in W's dtype (``add_to_weight``)."""
        error = self.add_to_weight(sign * (b.float() @ a.float()))
        self.merged = sign > 0
        return error

    def lora_output(self, x: torch.Tensor, a: Factor, b: Factor, slot: LayerSlot) -> torch.Tensor:
        """s · B_l A_l (dropout(x)) for inputs x (..., in)."""
        h = x.to(a.dtype)
        if slot.dropout > 0.0 and self.training:
            h = F.dropout(h, slot.dropout, training=True)
        return factors.linear(factors.linear(h, a), factors.scaled(b, slot.scaling))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged or self.cache.disabled:
            return out
        if self.cache.mixed is not None:
            return self._mixed_forward(x, out, self.cache.mixed)
        slot = self.slot
        if slot is None:
            return out
        a, b = self.cache.factors(slot)
        return out + self.lora_output(x, a, b, slot).to(out.dtype)

    def _mixed_forward(self, x: torch.Tensor, out: torch.Tensor, mixed: MixedBatch) -> torch.Tensor:
        """Each adapter's factors on its own rows only; ``__base__`` rows (and adapters not adapting this
        layer) keep the base output."""
        for name, rows in mixed.groups(x.shape[0], x.device, self.module_name):
            slot = mixed.slots[name].get(self.module_name)
            if slot is None:
                continue
            a, b = self.cache.factors(slot, name)
            out = out.index_add(0, rows, self.lora_output(x.index_select(0, rows), a, b, slot).to(out.dtype))
        return out

    def extra_repr(self) -> str:
        return f"{self.module_name}, slot={self.slot}, merged={self.merged}"


class AdaptedLinear(AdaptedLayer):
    """An adapted ``nn.Linear`` (bitsandbytes' 4-/8-bit Linears are nn.Linear subclasses: same path)."""

    base_types = (nn.Linear,)

    @staticmethod
    def features(module: nn.Module) -> tuple[int, int]:
        linear = cast(nn.Linear, module)
        return linear.in_features, linear.out_features

    @property
    def in_features(self) -> int:
        return cast(nn.Linear, self.base_layer).in_features

    @property
    def out_features(self) -> int:
        return cast(nn.Linear, self.base_layer).out_features


class AdaptedConv1D(AdaptedLayer):
    """An adapted GPT-2-style ``Conv1D``: y = x W + b with W stored (in × out), so ΔW is added transposed.

    PEFT adapts it with ``fan_in_fan_out=True``: its lora_A/lora_B are stored exactly as for a Linear.
    """

    fan_in_fan_out = True

    @staticmethod
    def features(module: nn.Module) -> tuple[int, int]:
        in_features, out_features = cast(torch.Tensor, module.weight).shape
        return int(in_features), int(out_features)

    def weight_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.T


class AdaptedEmbedding(AdaptedLayer):
    """An adapted ``nn.Embedding`` as PEFT's LoRA embedding: in = num_embeddings, out = embedding_dim.

    A_l (r × num_embeddings) is looked up like an embedding table (row ``i`` of A_lᵀ for token i),
    B_l (dim × r) maps it to the embedding: y = E[i] + s · B_l A_l[:, i]. The table stores ΔW transposed
    (num_embeddings × dim). PEFT applies no dropout to embeddings, and neither does this.
    """

    base_types = (nn.Embedding,)
    peft_factor_keys = ("lora_embedding_A", "lora_embedding_B")

    @staticmethod
    def features(module: nn.Module) -> tuple[int, int]:
        embedding = cast(nn.Embedding, module)
        return embedding.num_embeddings, embedding.embedding_dim

    def weight_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.T

    def lora_output(self, x: torch.Tensor, a: Factor, b: Factor, slot: LayerSlot) -> torch.Tensor:
        base = cast(nn.Embedding, self.base_layer)
        after_a = factors.embedding(x, a, padding_idx=base.padding_idx, scale_grad_by_freq=base.scale_grad_by_freq)
        return factors.linear(after_a, b) * slot.scaling


def adapted_layer_type(module: nn.Module) -> type[AdaptedLayer] | None:
    """The wrapper class for a module lorazoo can adapt (Linear, Conv1D, Embedding), else None."""
    if isinstance(module, AdaptedLayer):
        return type(module)
    if isinstance(module, nn.Linear):
        return AdaptedLinear
    conv1d = _conv1d_type()
    if conv1d is not None and isinstance(module, conv1d):
        return AdaptedConv1D
    if isinstance(module, nn.Embedding):
        return AdaptedEmbedding
    return None


def module_features(module: nn.Module) -> tuple[int, int]:
    """(in, out) of an adaptable module as the layout records it (wrappers report their base)."""
    if isinstance(module, AdaptedLayer):
        module = module.base_layer
    layer_type = adapted_layer_type(module)
    if layer_type is None:
        raise TypeError(f"{type(module).__name__} is not a module lorazoo adapts")
    return layer_type.features(module)


def wrap_module(module: nn.Module, module_name: str, cache: ThetaCache) -> AdaptedLayer:
    """The adapted wrapper around ``module`` (refusing options whose semantics the adapter cannot keep)."""
    layer_type = adapted_layer_type(module)
    if layer_type is None:
        raise TypeError(f"{module_name!r} ({type(module).__name__}) is not a module lorazoo adapts")
    if layer_type is AdaptedEmbedding and module.max_norm is not None:
        from lorazoo.errors import TargetModulesError

        raise TargetModulesError(
            f"{module_name!r} is an nn.Embedding with max_norm={module.max_norm}: its renormalisation would "
            "rewrite the adapter's factors in place; adapt embeddings without max_norm"
        )
    return layer_type(module, module_name, cache)


def fold_deltas(
    base_model: nn.Module, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], sign: int
) -> dict[str, float]:
    """Fold every adapted layer's ΔW (``factors``: name -> (A_l, s · B_l)) into its base weight (``sign`` +1) or
    take it out (-1). All or nothing: a tied weight, or a quantised one that cannot hold W ± ΔW within its bound,
    is refused before any weight changes. Returns the quantised layers' achieved max |stored − exact|."""
    layers = [m for m in base_model.modules() if isinstance(m, AdaptedLayer) and m.module_name in factors]
    check_untied(base_model, layers)
    for layer in layers:
        layer.check_fold(*factors[layer.module_name], sign)
    errors: dict[str, float] = {}
    for layer in layers:
        error = layer.fold(*factors[layer.module_name], sign)
        if error is not None:
            errors[layer.module_name] = error
    return errors


def check_untied(base_model: nn.Module, layers: list[AdaptedLayer]) -> None:
    """Merging into a weight another module shares (tied input/output embeddings) would change both."""
    owners: dict[int, list[str]] = {}
    for name, param in base_model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(name)
    for layer in layers:
        names = owners.get(id(layer.base_layer.weight), [])
        if len(names) > 1:
            raise AdapterStateError(
                f"cannot merge into {layer.module_name!r}: its weight is tied to {names[1:]} and merging would change "
                "both; keep the adapter unmerged, or untie the weights (tie_word_embeddings=False) before attaching"
            )


def base_weights(base_model: nn.Module, layout: Layout) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, W) of every adapted module, one at a time: W dense float32 in the layout's (out × in) orientation,
    what a weight-aware projection reads at attach and checks on load. A quantised weight is dequantised (what
    its forward multiplies by), a sharded one gathered (every rank must call this), a merged one refused."""
    for entry in layout:
        module = base_model.get_submodule(entry.name)
        layer = module if isinstance(module, AdaptedLayer) else wrap_module(module, entry.name, ThetaCache())
        if layer.merged:
            raise AdapterStateError(
                f"{entry.name!r} holds a merged adapter; unmerge() before adding or loading an adapter that "
                "reads the base weights (it would read W + ΔW)"
            )
        with gathered([layer.weight]):
            weight = full(dequantized_weight(layer.base_layer))
        yield entry.name, layer.weight_delta(weight)  # a transpose or nothing: it maps the stored W back too
