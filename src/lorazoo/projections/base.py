"""The one Projection interface and the registry that finds a projection by its config name.

A projection owns a method's parameters θ_d and returns the flat vector θ_D of every LoRA factor
(layout order: A_1, B_1, A_2, B_2, ...). The reconstructor, layers and lifecycle only ever call this
interface, so a new method is one file with ``@register_projection("name")`` and nothing else: the
package imports every module in projections/ (pkgutil), the options dataclass generates validation,
and ``tiny_case`` puts the method into the invariant test matrix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import UnknownProjectionError
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.factors import Factor
from lorazoo.projections.options import NoOptions, option_defaults, parse_options
from lorazoo.sharding import copy_into, shape_of

_REGISTRY: dict[str, type[Projection]] = {}


@dataclasses.dataclass(frozen=True)
class PaperSettings:
    """A method's published training setting, declared in its projection file beside the formula.

    The Hydra node ``projection/<name>`` and the lr search space ``hydra/sweeper=lr_<name>`` are derived
    from it when no yaml overrides them, so a new method is one file for the command line too.
    ``lr`` is the projection's learning rate; ``group_lrs`` the per-group ones where the method trains
    groups at different rates (VB-LoRA bank / logits); ``source`` cites where each value comes from.
    """

    rank: int
    lr: float
    alpha: float | None = None
    dropout: float = 0.0
    weight_decay: float = 0.0
    group_lrs: tuple[tuple[str, float], ...] = ()
    source: str = ""


def register_projection(name: str):
    """Class decorator: make a Projection subclass available as ``projection=<name>``."""

    def decorator(cls: type[Projection]) -> type[Projection]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"projection name {name!r} is already registered by {_REGISTRY[name].__name__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def projection_names() -> list[str]:
    return sorted(_REGISTRY)


def get_projection_class(name: str) -> type[Projection]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownProjectionError(
            f"unknown projection {name!r}; registered: {', '.join(projection_names())}"
        ) from None


def build_projection(layout: Layout, config: AdapterConfig) -> Projection:
    return get_projection_class(config.projection)(layout, config)


def layout_rank(config: AdapterConfig) -> Callable[[int, int], int]:
    """Rank of each module's factors under ``config``, from (in, out): what the layout is built with."""
    cls = get_projection_class(config.projection)
    return lambda in_features, out_features: cls.factor_rank(in_features, out_features, config.rank)


class Projection(nn.Module):
    """Maps the method's trainable parameters θ_d to θ_D (length ``D``).

    Class attributes a subclass sets:
      ``Options``      a dataclass of its ``projection_kwargs`` (fields from ``options.option``): defaults,
                       types and bounds; ``self.opts`` is the validated instance (other keys are rejected);
      ``is_linear``    θ_D is a linear function of θ_d, so ``matrix()`` exists;
      ``uses_alpha``   the layer scale is alpha / rank (LoRA-style) rather than 1;
      ``zero_at_init`` ΔW = 0 at init (the invariant matrix then checks outputs equal the base's);
      ``tiny_case``    ``projection_kwargs`` that fit the test suite's tiny models (hidden 32, 2 layers);
      ``paper``        the published setting (:class:`PaperSettings`): rank, α, dropout, lr(s), source;
      ``reads_base_weights``  a weight-aware method (LoRA-XS, TinyLoRA): the lifecycle hands it the frozen
                       base weights once, at attach (``init_from_base``), and checks a loaded adapter's
                       saved structures against the base it is loaded onto (``check_base``).
    ``defaults`` (the options' default values) is derived from ``Options``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    defaults: ClassVar[dict[str, Any]] = {}
    is_linear: ClassVar[bool] = False
    uses_alpha: ClassVar[bool] = False
    zero_at_init: ClassVar[bool] = False
    tiny_case: ClassVar[dict[str, Any]] = {}
    paper: ClassVar[PaperSettings | None] = None
    reads_base_weights: ClassVar[bool] = False

    @classmethod
    def factor_rank(cls, in_features: int, out_features: int, rank: int) -> int:
        """The rank of one module's A_l, B_l: ``rank`` for most methods; a method whose factors have a
        per-module rank (RandLoRA: n_bases · r, full rank) says so here, and the layout follows."""
        return rank

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.defaults = option_defaults(cls.Options)

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__()
        self.layout = layout
        self.config = config
        context = {"D": layout.D, "rank": config.rank}
        self.opts = parse_options(self.name, self.Options, config.projection_kwargs, context)
        self.options: dict[str, Any] = dataclasses.asdict(self.opts)

    # ----------------------------------------------------------------- the contract
    def forward(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def pieces(self) -> tuple[Factor, ...]:
        """θ_D as its layout segments [A_1, B_1, A_2, ...], what the layers read during a forward.

        Default: one ``split`` of ``forward()`` into flat segments (its backward is one concatenation). A
        projection whose factors are row scalings of shared matrices (tied, vera) returns them as
        ``factors.ScaledRows`` instead, so that the layers never form them during training;
        ``forward()`` must equal ``factors.concatenated(pieces())``.
        """
        return self().split(self.layout.segment_sizes)

    @property
    def D(self) -> int:
        return self.layout.D

    @property
    def d(self) -> int:
        """Trainable numel: what the optimiser sees."""
        return sum(p.numel() for p in self.trainable_parameters())

    @property
    def scaling(self) -> float:
        return self.config.effective_alpha / self.config.rank if self.uses_alpha else 1.0

    def stored_numel(self) -> int:
        """Numel needed to store the trained adapter for inference (smaller than ``d`` for VB-LoRA)."""
        return self.d

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for _, p in self.named_trainable_parameters()]

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters the method trains by design, whether or not this adapter is active right now."""
        designed = self.__dict__.setdefault("_designed_trainable", None)
        if designed is None:
            designed = self.__dict__["_designed_trainable"] = {n for n, p in self.named_parameters() if p.requires_grad}
        return [(n, p) for n, p in self.named_parameters() if n in designed]

    def set_active(self, active: bool) -> None:
        """Only the active adapter's designed-trainable parameters require grad."""
        for _, p in self.named_trainable_parameters():
            p.requires_grad_(active)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named groups that may get their own learning rate / weight decay (VB-LoRA: bank vs logits)."""
        return {"projection": self.trainable_parameters()}

    def theta_d(self) -> torch.Tensor:
        """θ_d as one flat vector (trainable parameters in order): the x of θ_D = P x."""
        return torch.cat([p.reshape(-1) for p in self.trainable_parameters()])

    def matrix(self) -> torch.Tensor | None:
        """The D × d matrix P for linear projections (dense here; subclasses may return sparse), else None.

        The generic version is the Jacobian of ``forward`` and is meant for checks on small layouts.
        """
        if not self.is_linear:
            return None
        named = self.named_trainable_parameters()
        names = [n for n, _ in named]
        values = tuple(p.detach() for _, p in named)

        def theta_of(*params: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self, dict(zip(names, params)), ())

        jac = torch.func.jacrev(theta_of, argnums=tuple(range(len(values))))(*values)
        return torch.cat([j.reshape(self.D, -1) for j in jac], dim=1)

    # ----------------------------------------------------------------- weight-aware projections
    def init_from_base(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Derive frozen structures from the base, once, at attach (called only when ``reads_base_weights``).

        ``weights`` yields (module name, W) in layout order, W dense float32 in the layout's (out × in)
        orientation: a Conv1D's or an embedding's weight transposed, a quantised one dequantised, a sharded
        one gathered. The lifecycle never says which method it serves; the projection decides what to keep.
        """

    def check_base(self, weights: Iterable[tuple[str, torch.Tensor]], where: str) -> None:
        """After a load (``reads_base_weights`` only): refuse, in one line, a base other than the one the
        saved structures were derived from. ``weights`` as for ``init_from_base``."""

    def check_same_base(self, live: Projection, where: str) -> None:
        """``check_base`` against what a live adapter of the same method recorded of its base (loading weights
        into it: the base may hold a merge by then). A projection whose layout differs from ``live``'s is left
        to the caller's layout check."""

    # ----------------------------------------------------------------- persistence
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a saved adapter needs: every parameter (+ buffers a subclass chooses to persist)."""
        state = {n: p.detach() for n, p in self.named_parameters()}
        state.update({n: b.detach() for n, b in self.named_buffers() if n in self.saved_buffer_names()})
        return state

    def saved_buffer_names(self) -> set[str]:
        return set()

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        expected = self.adapter_state_dict()
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"adapter tensors do not fit projection {self.name!r}: missing {missing}, unexpected {unexpected}"
            )
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        with torch.no_grad():
            for key, value in tensors.items():
                if tuple(value.shape) != shape_of(own[key]):
                    raise ValueError(
                        f"tensor {key!r} has shape {tuple(value.shape)}, projection expects {shape_of(own[key])}"
                    )
                copy_into(own[key], value)  # a sharded (FSDP) parameter keeps its own shard

    # ----------------------------------------------------------------- helpers for subclasses
    def small_uniform_theta(self, size: int) -> nn.Parameter:
        """θ_d ~ U(±init_range) (PEFT's Uni-LoRA init); θ_d = 0 would give A = B = 0 and zero gradients."""
        bound = float(self.options["init_range"])
        return nn.Parameter(rng.as_tensor(rng.uniform(self.config.seed, f"{self.name}/theta", size, -bound, bound)))

    def lora_init(self, purpose: str = "lora_init") -> torch.Tensor:
        """θ_D initialised like PEFT LoRA: A ~ U(±1/√in) (kaiming-uniform, a=√5), B = 0."""
        return lora_style_init(self.layout, self.config.seed, purpose)


def lora_style_init(layout: Layout, seed: int, purpose: str = "lora_init") -> torch.Tensor:
    """Flat θ_D with A entries U(±1/√in_l) and B entries 0, from the counter-based generator."""
    bounds = (
        np.concatenate(
            [np.concatenate([np.full(e.a_numel, 1.0 / np.sqrt(e.in_features)), np.zeros(e.b_numel)]) for e in layout]
        )
        if len(layout)
        else np.zeros(0)
    )
    return rng.as_tensor(rng.uniform(seed, purpose, layout.D, -1.0, 1.0) * bounds)
