"""The adapter lifecycle: attach, switch, merge, disable, save, export. It never names a method."""

from __future__ import annotations

import contextlib
import copy
import functools
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .config import AdapterConfig
from .errors import AdapterStateError, TargetModulesError
from .layout import Layout
from .projections import Projection, build_projection
from .reconstructor import AdaptedLinear, LayerSlot, ThetaCache, factors_from_theta

DEFAULT_ADAPTER = "default"


class ModuleCopies(nn.Module):
    """A fully trained module (task head) with one copy per adapter; the active adapter's copy runs."""

    def __init__(self, original: nn.Module, cache: ThetaCache):
        super().__init__()
        self.original = original
        self.copies = nn.ModuleDict()
        self.cache = cache

    def add(self, adapter_name: str) -> None:
        clone = copy.deepcopy(self.original)
        if _float_dtype(clone) in (torch.bfloat16, torch.float16):
            clone.float()  # trained copies keep fp32 weights, like θ: bf16 would round small updates away
        clone.requires_grad_(True)
        self.copies[adapter_name] = clone

    @property
    def active(self) -> nn.Module:
        name = self.cache.active_adapter
        return self.copies[name] if name in self.copies else self.original

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        module, dtype = self.active, _float_dtype(self.original)
        copy_dtype = _float_dtype(module)
        if module is self.original or dtype is None or copy_dtype == dtype:
            return module(*args, **kwargs)
        # an fp32 copy in a half-precision base: compute in fp32, hand the base its own dtype back
        return _cast(module(*_cast(args, copy_dtype), **_cast(kwargs, copy_dtype)), dtype)


def _float_dtype(module: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    """Floating tensors anywhere in ``tree`` (args, kwargs, outputs) cast to ``dtype``."""
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t, tree)


class AdaptedModel(nn.Module):
    """A base transformers model with one or more adapters; forward signature = the base's.

    The base is modified in place (target Linears are wrapped) and frozen. Attribute access falls back
    to the base model, so ``model.generate``, ``model.config`` etc. work as before.
    """

    def __init__(self, base_model: nn.Module, config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER):
        super().__init__()
        self.base_model = base_model
        self.adapters = nn.ModuleDict()
        self.adapter_configs: dict[str, AdapterConfig] = {}
        self.cache = ThetaCache()
        self.merged_adapter: str | None = None
        base_model.requires_grad_(False)
        self._hook = base_model.register_forward_pre_hook(self._refresh_theta)
        self.add_adapter(adapter_name, config)

        @functools.wraps(base_model.forward)  # the same signature, so Trainer keeps the right columns
        def forward(*args: Any, **kwargs: Any) -> Any:
            return self.base_model(*args, **kwargs)

        self.forward = forward

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_model")
            if base is None:
                raise
            return getattr(base, name)

    def _refresh_theta(self, module: nn.Module, args: Any) -> None:
        if self.active_adapter is not None and self.merged_adapter is None and not self.cache.disabled:
            self.cache.refresh(self.projection, self.projection.layout)

    # ----------------------------------------------------------------- adapters
    @property
    def active_adapter(self) -> str | None:
        return self.cache.active_adapter

    @property
    def projection(self) -> Projection:
        return self.adapters[self._require_active()]

    @property
    def layout(self) -> Layout:
        return self.projection.layout

    @property
    def adapter_config(self) -> AdapterConfig:
        return self.adapter_configs[self._require_active()]

    def _require_active(self) -> str:
        if self.active_adapter is None:
            raise AdapterStateError("no active adapter; add one with add_adapter(name, config)")
        return self.active_adapter

    def add_adapter(self, name: str, config: AdapterConfig) -> Projection:
        """Add an adapter (any projection) over the same base; it becomes active if none is."""
        if name in self.adapters:
            raise AdapterStateError(f"adapter {name!r} already exists; existing: {list(self.adapters)}")
        layout = Layout.from_model(self.base_model, config.target_modules, config.rank)
        projection = build_projection(layout, config).to(self._base_device())
        projection.set_active(False)
        self._wrap_targets(layout)
        for module in self._module_copies(config.modules_to_save):
            module.add(name)
            module.copies[name].requires_grad_(False)
        self.adapters[name] = projection
        self.adapter_configs[name] = config
        if self.active_adapter is None:
            self.set_adapter(name)
        return projection

    def set_adapter(self, name: str) -> None:
        """Make ``name`` the adapter every forward uses; costs no copy of base weights."""
        if name not in self.adapters:
            raise AdapterStateError(f"unknown adapter {name!r}; existing: {list(self.adapters)}")
        if self.merged_adapter is not None:
            raise AdapterStateError(f"adapter {self.merged_adapter!r} is merged; unmerge() before switching")
        projection, config = self.adapters[name], self.adapter_configs[name]
        slots = {
            e.name: LayerSlot.from_entry(i, e, projection.scaling, config.dropout) for i, e in enumerate(projection.layout)
        }
        for layer in self.adapted_layers():
            layer.slot = slots.get(layer.module_name)
        for other_name, other in self.adapters.items():
            other.set_active(other_name == name)
        for module in self._module_copies():
            for copy_name, module_copy in module.copies.items():
                module_copy.requires_grad_(copy_name == name)
        self.cache.active_adapter = name
        self.cache.invalidate()

    def delete_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise AdapterStateError(f"unknown adapter {name!r}; existing: {list(self.adapters)}")
        if self.merged_adapter == name:
            raise AdapterStateError(f"adapter {name!r} is merged; unmerge() before deleting it")
        del self.adapters[name]
        del self.adapter_configs[name]
        for module in self._module_copies():
            if name in module.copies:
                del module.copies[name]
        if self.active_adapter == name:
            self.cache.active_adapter = None
            for layer in self.adapted_layers():
                layer.slot = None
            if self.adapters:
                self.set_adapter(next(iter(self.adapters)))

    def load_adapter(self, path: str | Path, name: str) -> Projection:
        from .io import read_adapter

        config, tensors = read_adapter(path, self.base_model)
        projection = self.add_adapter(name, config)
        _load_tensors(self, name, projection, tensors)
        return projection

    def load_adapter_weights(self, path: str | Path) -> None:
        """Overwrite the active adapter's tensors (and heads) in place from a saved adapter: resuming training."""
        from .io import read_adapter

        _, tensors = read_adapter(path, self.base_model)
        _load_tensors(self, self._require_active(), self.projection, tensors)

    # ----------------------------------------------------------------- inspection
    def adapted_layers(self) -> list[AdaptedLinear]:
        return [m for m in self.base_model.modules() if isinstance(m, AdaptedLinear)]

    def _module_copies(self, names: list[str] | None = None) -> list[ModuleCopies]:
        if names is None:
            return [m for m in self.base_model.modules() if isinstance(m, ModuleCopies)]
        return [self._wrap_module_to_save(n) for n in names]

    def _head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active adapter's copies of ``modules_to_save`` (its trained heads)."""
        name = self.active_adapter
        return [p for m in self._module_copies() if name in m.copies for p in m.copies[name].parameters()]

    def delta_weight(self, name: str) -> torch.Tensor:
        """The scaled ΔW_l = s · B_l A_l (out × in) of the active adapter."""
        entry = self.layout.entry(name)
        a, b = factors_from_theta(self.projection(), entry)
        return self.projection.scaling * (b @ a)

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Exact (A_l, s · B_l) of every adapted module: what export and merge use."""
        theta_D, scaling = self.projection(), self.projection.scaling
        out = {}
        for entry in self.layout:
            a, b = factors_from_theta(theta_D, entry)
            out[entry.name] = (a, b * scaling)
        return out

    def num_parameters(self) -> dict[str, int]:
        """Trainable numel of the projection, D, stored-after-training numel, and the head's numel."""
        head = sum(p.numel() for p in self._head_parameters())
        return {
            "trainable": self.projection.d,
            "D": self.projection.D,
            "stored": self.projection.stored_numel(),
            "modules_to_save": head,
        }

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named trainable groups of the active adapter (projection groups + ``head``)."""
        groups = dict(self.projection.parameter_groups())
        head = self._head_parameters()
        if head:
            groups["head"] = head
        return groups

    # ----------------------------------------------------------------- merge / disable
    @torch.no_grad()
    def merge(self) -> None:
        """W += s · B_l A_l in W's dtype for the active adapter; forward then runs at base speed."""
        if self.merged_adapter is not None:
            raise AdapterStateError(f"adapter {self.merged_adapter!r} is already merged")
        self._apply_delta(+1)
        self.merged_adapter = self._require_active()

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged_adapter is None:
            raise AdapterStateError("nothing is merged")
        self._apply_delta(-1)
        self.merged_adapter = None

    def _apply_delta(self, sign: int) -> None:
        factors = self.lora_factors()
        for layer in self.adapted_layers():
            if layer.module_name in factors:
                a, b = factors[layer.module_name]
                weight = layer.base_layer.weight
                weight += (sign * (b.float() @ a.float())).to(weight.dtype)
                layer.merged = sign > 0

    def merge_and_unload(self) -> nn.Module:
        """Merge the active adapter and return the plain base model (adapted modules unwrapped)."""
        if self.merged_adapter is None:
            self.merge()
        for layer_name, module in list(self.base_model.named_modules()):
            if isinstance(module, AdaptedLinear):
                _set_submodule(self.base_model, layer_name, module.base_layer)
            elif isinstance(module, ModuleCopies):
                dtype = _float_dtype(module.original)  # an fp32 trained copy goes back in the base's dtype
                _set_submodule(self.base_model, layer_name, module.active.to(dtype) if dtype else module.active)
        self._hook.remove()
        return self.base_model

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model alone (a merged adapter is unmerged for the duration)."""
        merged = self.merged_adapter
        if merged is not None:
            self.unmerge()
        previous = self.cache.active_adapter
        self.cache.disabled = True
        self.cache.active_adapter = None  # heads fall back to the original module
        try:
            yield
        finally:
            self.cache.disabled = False
            self.cache.active_adapter = previous
            if merged is not None:
                self.merge()

    # ----------------------------------------------------------------- persistence
    def save_adapter(self, path: str | Path) -> Path:
        from .io import save_adapter

        return save_adapter(self, path)

    def export_peft_lora(self, path: str | Path) -> Path:
        from .io import export_peft_lora

        return export_peft_lora(self, path)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a saved adapter holds: projection tensors + the active copies of saved modules."""
        tensors = {f"projection.{k}": v for k, v in self.projection.adapter_state_dict().items()}
        for name, module in self.base_model.named_modules():
            if isinstance(module, ModuleCopies) and self.active_adapter in module.copies:
                for key, value in module.copies[self.active_adapter].state_dict().items():
                    tensors[f"modules_to_save.{name}/{key}"] = value.detach()
        return tensors

    # ----------------------------------------------------------------- training conveniences
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Non-reentrant checkpointing: recomputed layers read the same θ_D pieces (reentrant cannot)."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _base_device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def _wrap_targets(self, layout: Layout) -> None:
        for entry in layout:
            module = self.base_model.get_submodule(entry.name)
            if not isinstance(module, AdaptedLinear):
                _set_submodule(self.base_model, entry.name, AdaptedLinear(module, entry.name, self.cache))

    def _wrap_module_to_save(self, pattern: str) -> ModuleCopies:
        names = [n for n, _ in self.base_model.named_modules() if n == pattern or n.endswith("." + pattern)]
        names = [n for n in names if ".original" not in n and ".copies." not in n]
        if not names:
            top = [n for n, _ in self.base_model.named_children()]
            raise TargetModulesError(f"modules_to_save entry {pattern!r} matched no module; top-level modules: {top}")
        module = self.base_model.get_submodule(names[0])
        if not isinstance(module, ModuleCopies):
            module = ModuleCopies(module, self.cache)
            _set_submodule(self.base_model, names[0], module)
        return module


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _load_tensors(model: AdaptedModel, name: str, projection: Projection, tensors: dict[str, torch.Tensor]) -> None:
    from .io import split_adapter_tensors

    projection_tensors, saved_modules = split_adapter_tensors(tensors)
    projection.load_adapter_state_dict(projection_tensors)
    for module_name, state in saved_modules.items():
        wrapper = model.base_model.get_submodule(module_name)
        wrapper.copies[name].load_state_dict(state)
    model.cache.invalidate()


def attach(base_model: nn.Module, config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> AdaptedModel:
    """Wrap ``base_model`` (in place, frozen) with one adapter made from ``config``."""
    return AdaptedModel(base_model, config, adapter_name)
