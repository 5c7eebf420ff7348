"""The adapter lifecycle: attach, switch, merge, disable, save, export. It never names a method."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from lorazoo import files, integrity
from lorazoo.adapted_layers import (
    AdaptedLayer,
    LayerSlot,
    MixedBatch,
    ThetaCache,
    base_weights,
    factors_from_theta,
    fold_deltas,
    wrap_module,
)
from lorazoo.adapter_dir import checked_adapter, load_heads, split_adapter_tensors
from lorazoo.config import AdapterConfig
from lorazoo.errors import AdapterFileError, AdapterStateError, TargetModulesError
from lorazoo.layout import Layout
from lorazoo.mixed import accepted_kwargs, check_forward_kwargs, plan_mixed_batch
from lorazoo.peft_config import implied_head_modules, peft_base_path, peft_task_type
from lorazoo.projections import Projection, build_projection, layout_rank
from lorazoo.quantized import keep_4bit_layout_portable
from lorazoo.rank_limit import EXPORT_RECORD, card_writer, check_max_rank, cut_record, limit_rank
from lorazoo.sharding import call_with_full_parameters, full, gathered, is_fsdp_managed, is_main_process
from lorazoo.targets import ModuleCopies, float_dtype, layout_from_model, set_submodule

DEFAULT_ADAPTER = "default"


class AdaptedModel(nn.Module):
    """A base transformers model with one or more adapters; forward signature = the base's.

    The base is modified in place (target Linears are wrapped) and frozen. Attribute access falls back
    to the base model, so ``model.generate``, ``model.config`` etc. work as before.
    """

    # transformers' marker for "trainable adapters are attached": with it, Trainer accepts a bitsandbytes
    # base (it refuses to fine-tune a "purely quantized" model, i.e. one without adapters)
    _hf_peft_config_loaded = True

    def __init__(
        self,
        base_model: nn.Module,
        config: AdapterConfig,
        adapter_name: str = DEFAULT_ADAPTER,
        _projection: Projection | None = None,
    ):
        refuse_adapted_base(base_model)
        super().__init__()
        self.base_model = base_model
        self.adapters = nn.ModuleDict()
        self.training = base_model.training  # every module lorazoo adds runs in the base's mode
        self.adapters.train(base_model.training)
        self._unloaded = False  # merge_and_unload() ran: no adapter layers left (for good)
        self._disabled_depth = 0  # open ``with disabled()`` blocks
        self.adapter_configs: dict[str, AdapterConfig] = {}
        self.cache = ThetaCache()
        self.merged_adapter: str | None = None
        self.merge_errors: dict[str, float] = {}  # quantised layers: max |stored − exact| of the last merge
        self._mixed_request: MixedBatch | None = None
        base_model.requires_grad_(False)
        keep_4bit_layout_portable(base_model)  # no machine-dependent CPU repacking of 4-bit weights
        self._attach_hooks()
        self._training = 0  # > 0 while a LoraZooTrainer trains (training_guard): the active adapter is fixed
        self._install(adapter_name, config, _projection)
        self._bind_forward()

    def _attach_hooks(self) -> None:
        """θ_D is refreshed when the base (or its transformers backbone, run alone) starts a forward."""
        base_model = self.base_model
        self._hooks = [
            base_model.register_forward_pre_hook(self._enter_forward),
            base_model.register_forward_hook(self._leave_forward, always_call=True),
        ]
        backbone = getattr(base_model, "base_model", None)  # transformers' backbone (LlamaModel in LlamaForCausalLM)
        if isinstance(backbone, nn.Module) and backbone is not base_model:
            # code that runs the backbone without the model (TRL's fused LM head) still gets a fresh θ_D
            self._hooks.append(backbone.register_forward_pre_hook(self._enter_backbone))

    def _bind_forward(self) -> None:
        accepted = accepted_kwargs(self.base_model.forward)

        @functools.wraps(self.base_model.forward)  # the same signature, so Trainer keeps the right columns
        def forward(*args: Any, adapter_names: Any = None, **kwargs: Any) -> Any:
            check_forward_kwargs(accepted, kwargs)
            if adapter_names is None:
                return self.base_model(*args, **kwargs)
            with self._mixed_batch(adapter_names):
                return self.base_model(*args, **kwargs)

        self.forward = forward

    def __deepcopy__(self, memo: dict[int, Any]) -> AdaptedModel:
        """An independent working copy (TRL's reference model, EMA copies). Copied the default way, the copy's
        forward closure would still run this model's base, and its hook handles would remove this model's hooks."""
        self.check_state("copy.deepcopy(model)", after_unload=True)  # a copy would never leave the block
        self.cache.invalidate()  # a cached θ_D may carry autograd history, which cannot be deep-copied
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            if key not in ("forward", "_hooks"):
                copied.__dict__[key] = copy.deepcopy(value, memo)
        ours = {handle.id for handle in self._hooks}
        for module in copied.base_model.modules():  # copies of this model's hooks: the copy registers its own
            for hooks in (module._forward_pre_hooks, module._forward_hooks, module._forward_hooks_always_called):
                for hook_id in ours & set(hooks):
                    del hooks[hook_id]
        if self._unloaded:
            copied._hooks = []  # the copy of a plain (unloaded) base needs no θ_D hooks
        else:
            copied._attach_hooks()
        copied._bind_forward()
        return copied

    def __setattr__(self, name: str, value: Any) -> None:
        base = self.__dict__.get("_modules", {}).get("base_model")
        if name == "forward" and isinstance(value, types.MethodType) and value.__self__ is self and base is not None:
            # A library patching a transformers model's forward (TRL's fused LM head) writes it against
            # PreTrainedModel's attributes (``self.base_model`` = the backbone). Here ``base_model`` is the
            # wrapped model, so its method runs bound to that model; calls still enter through this one.
            value = types.MethodType(value.__func__, base)
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            base = self.__dict__.get("_modules", {}).get("base_model")
            if base is None:
                raise
            return getattr(base, name)

    def _enter_forward(self, module: nn.Module, args: Any) -> None:
        self._refresh_theta(module, args)
        self.__dict__["_theta_fresh"] = True  # the backbone, called inside this forward, reuses it

    def _leave_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        self.__dict__["_theta_fresh"] = False

    def _enter_backbone(self, module: nn.Module, args: Any) -> None:
        if not self.__dict__.get("_theta_fresh"):
            self._refresh_theta(module, args)

    def _refresh_theta(self, module: nn.Module, args: Any) -> None:
        mixed = self._mixed_request
        if mixed is not None:
            self.cache.refresh_mixed(mixed, {name: cast(Projection, self.adapters[name]) for name in mixed.slots})
        elif self.active_adapter is not None and self.merged_adapter is None and not self.cache.disabled:
            if is_fsdp_managed(self):
                self.cache.invalidate()  # FSDP reuses the gathered θ's storage across steps: never trust the no-grad key
            self.cache.refresh(self.projection)
        else:
            self.cache.mixed = None

    @contextlib.contextmanager
    def _mixed_batch(self, adapter_names: Any, expandable: bool = False) -> Iterator[None]:
        """Forwards inside run rows on their own adapters (mixed.py); the plan is checked first."""
        if self._mixed_request is not None:
            raise AdapterStateError("a mixed-adapter batch is already running; nested adapter_names are not supported")
        self._mixed_request = plan_mixed_batch(self, adapter_names, expandable)
        try:
            yield
        finally:
            self._mixed_request = None

    def generate(self, *args: Any, adapter_names: Any = None, **kwargs: Any) -> Any:
        """The base's ``generate``; ``adapter_names`` (one per prompt row) serves a mixed-adapter batch."""
        base: Any = self.base_model  # a transformers model: ``generate`` is not on nn.Module
        if adapter_names is None:
            return base.generate(*args, **kwargs)
        with self._mixed_batch(adapter_names, expandable=True):
            return base.generate(*args, **kwargs)

    # ----------------------------------------------------------------- lifecycle states
    # live (attached) -> unloaded by merge_and_unload(), for good. While live: an active adapter or none, that
    # adapter merged or not, and disabled to a nesting depth (``with disabled()``), inside which the adapter
    # set, the active adapter and the merge stay fixed (the block's exit restores them). Every module lorazoo
    # adds runs in the train/eval mode of what it wraps; train()/eval() reach them all.
    def check_state(self, what: str, inside_disabled: bool = False, after_unload: bool = False) -> None:
        """Refuse ``what`` in a state that cannot honour it, naming the state (one line)."""
        if self._unloaded and not after_unload:
            raise AdapterStateError(
                f"{what} is refused: merge_and_unload() has unloaded this model (its base now holds the merged "
                "weights and no adapter layers); use the base it returned, or attach a new adapter to that base"
            )
        if self._disabled_depth and not inside_disabled:
            raise AdapterStateError(
                f"{what} is refused inside `with model.disabled()` (depth {self._disabled_depth}): the adapters, "
                "the active adapter and the merge stay fixed until the block exits; call it after the block"
            )

    # ----------------------------------------------------------------- adapters
    @property
    def active_adapter(self) -> str | None:
        return self.cache.active_adapter

    @property
    def projection(self) -> Projection:
        return cast(Projection, self.adapters[self._require_active()])

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
        self.check_state(f"add_adapter({name!r})")
        return self._install(name, config, None)

    def _install(self, name: str, config: AdapterConfig, projection: Projection | None) -> Projection:
        """add_adapter with an optional projection already built (and checked) by the loader."""
        if name in self.adapters:
            raise AdapterStateError(f"adapter {name!r} already exists; existing: {list(self.adapters)}")
        fresh = projection is None
        if projection is None:
            layout = layout_from_model(
                self.base_model, config.target_modules, layout_rank(config), config.modules_to_save
            )
            projection = build_projection(layout, config)
        layout = projection.layout
        projection = projection.to(self._base_device()).train(self.base_model.training)
        if fresh and projection.reads_base_weights:  # a weight-aware method reads the frozen base, once
            projection.init_from_base(base_weights(self.base_model, layout))
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

    @contextlib.contextmanager
    def training_guard(self) -> Iterator[None]:
        """Held by LoraZooTrainer.train(): the optimizer holds the active adapter's parameters, so switching,
        deleting or merging adapters meanwhile would train (or save) another adapter than the one reported."""
        self.check_state("training")  # disabled or unloaded, no adapter would receive gradients
        self._training += 1
        try:
            yield
        finally:
            self._training -= 1

    def _refuse_during_training(self, what: str) -> None:
        if self._training:
            raise AdapterStateError(
                f"{what} during LoraZooTrainer.train() is refused: the optimizer holds adapter "
                f"{self.active_adapter!r}'s parameters; do it before or after training"
            )

    def set_adapter(self, name: str) -> None:
        """Make ``name`` the adapter every forward uses; costs no copy of base weights."""
        self.check_state(f"set_adapter({name!r})")
        if self.__dict__.get("_training") and name != self.active_adapter:
            self._refuse_during_training(f"set_adapter({name!r})")
        if name not in self.adapters:
            raise AdapterStateError(f"unknown adapter {name!r}; existing: {list(self.adapters)}")
        if self.merged_adapter is not None:
            raise AdapterStateError(f"adapter {self.merged_adapter!r} is merged; unmerge() before switching")
        slots = self.layer_slots(name)
        for layer in self.adapted_layers():
            layer.slot = slots.get(layer.module_name)
        for other_name, other in self.adapters.items():
            cast(Projection, other).set_active(other_name == name)
        for module in self._module_copies():
            for copy_name, module_copy in module.copies.items():
                module_copy.requires_grad_(copy_name == name)
        self.cache.active_adapter = name
        self.cache.invalidate()

    def layer_slots(self, name: str) -> dict[str, LayerSlot]:
        """Where adapter ``name``'s factors sit in its split θ_D, and its scale and dropout, per module."""
        projection, config = cast(Projection, self.adapters[name]), self.adapter_configs[name]
        return {
            e.name: LayerSlot.from_entry(i, e, projection.scaling, config.dropout)
            for i, e in enumerate(projection.layout)
        }

    def delete_adapter(self, name: str) -> None:
        self.check_state(f"delete_adapter({name!r})")
        self._refuse_during_training(f"delete_adapter({name!r})")
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
        """Add the adapter saved at ``path`` as ``name``. All or nothing: every check (layout, sizes, dtypes,
        finiteness, regenerated structures, head shapes) runs on a stand-alone copy first, so a failed load
        leaves the model exactly as it was and a retry can succeed."""
        self.check_state(f"load_adapter(..., {name!r})")
        if name in self.adapters:
            raise AdapterStateError(f"adapter {name!r} already exists; existing: {list(self.adapters)}")
        config, projection, heads = checked_adapter(path, self.base_model)
        projection = self._install(name, config, projection)
        load_heads(self.base_model, name, heads, path)
        self.cache.invalidate()
        return projection

    def load_adapter_weights(self, path: str | Path, heads: bool = True) -> None:
        """Overwrite the active adapter's tensors (and heads) in place from a saved adapter: resuming training.
        ``heads=False`` loads the projection only (starting a new task from another task's adapter).

        A merged adapter is unmerged, loaded and merged again, so the base weights end up W + ΔW(new)."""
        self.check_state("load_adapter_weights()")
        # a weight-aware file is checked against the record of the active adapter's base (W may hold a merge now)
        config, projection, head_tensors = checked_adapter(path, self.base_model, heads, self.projection)
        saved, mine = config.to_dict(), self.adapter_config.to_dict()
        # what decides ΔW from the same tensors; the seed matters only through the regenerated structures
        keys = ["projection", "rank", "alpha", "target_modules", "projection_kwargs"] + (
            ["modules_to_save"] if heads else []
        )
        differing = [k for k in keys if saved[k] != mine[k]]
        if not differing and projection.layout != self.layout:
            differing = ["layout"]
        if not differing and not integrity.same_structures(projection, self.projection):
            differing = ["seed"]
        if differing:
            key = differing[0]
            raise AdapterFileError(
                f"{str(path)!r} was saved with {key}={saved.get(key, '<its layout>')!r}, the active "
                f"adapter has {key}={mine.get(key, '<another layout>')!r}; load it with load_adapter instead"
            )
        merged = self.merged_adapter
        if merged is not None:
            self.unmerge()
        with torch.no_grad():
            self.projection.load_adapter_state_dict(projection.adapter_state_dict())
        load_heads(self.base_model, self._require_active(), head_tensors, path)
        self.cache.invalidate()
        if merged is not None:
            self.merge()

    # ----------------------------------------------------------------- inspection
    def adapted_layers(self) -> list[AdaptedLayer]:
        return [m for m in self.base_model.modules() if isinstance(m, AdaptedLayer)]

    def _module_copies(self, names: list[str] | None = None) -> list[ModuleCopies]:
        if names is None:
            return [m for m in self.base_model.modules() if isinstance(m, ModuleCopies)]
        return [self._wrap_module_to_save(n) for n in names]

    def _head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the active adapter's copies of ``modules_to_save`` (its trained heads)."""
        name = self.active_adapter
        if name is None:  # no active adapter: no copy holds it
            return []
        return [p for m in self._module_copies() if name in m.copies for p in m.copies[name].parameters()]

    def delta_weight(self, name: str) -> torch.Tensor:
        """The scaled ΔW_l = s · B_l A_l (out × in) of the active adapter."""
        entry = self.layout.entry(name)
        a, b = factors_from_theta(call_with_full_parameters(self.projection), entry)
        return self.projection.scaling * (b @ a)

    def lora_factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Exact (A_l, s · B_l) of every adapted module: what export and merge use."""
        theta_D, scaling = call_with_full_parameters(self.projection), self.projection.scaling
        out = {}
        for entry in self.layout:
            a, b = factors_from_theta(theta_D, entry)
            out[entry.name] = (a, b * scaling)
        return out

    def num_parameters(self, only_trainable: bool | None = None, exclude_embeddings: bool | None = None) -> Any:
        """No arguments: lorazoo's counts (``parameter_counts()``). With transformers' arguments: the int
        transformers' ``PreTrainedModel.num_parameters`` gives over the whole adapted model, because plain
        ``Trainer``, TRL and the W&B callback call it with that signature."""
        if only_trainable is None and exclude_embeddings is None:
            return self.parameter_counts()
        from lorazoo.interop import count_parameters_like_transformers

        return count_parameters_like_transformers(self, bool(only_trainable), bool(exclude_embeddings))

    @property
    def accepts_loss_kwargs(self) -> bool:
        """What Trainer would read off the base: does its loss divide by ``num_items_in_batch``?"""
        from lorazoo.interop import accepts_loss_kwargs

        return accepts_loss_kwargs(self.base_model)

    def parameter_counts(self) -> dict[str, int]:
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
        self.check_state("merge()")
        self._refuse_during_training("merge()")
        if self.merged_adapter is not None:
            raise AdapterStateError(f"adapter {self.merged_adapter!r} is already merged")
        self.merge_errors = fold_deltas(self.base_model, self.lora_factors(), +1)
        self.merged_adapter = self._require_active()

    @torch.no_grad()
    def unmerge(self) -> None:
        self.check_state("unmerge()")
        if self.merged_adapter is None:
            raise AdapterStateError("nothing is merged")
        self.merge_errors = fold_deltas(self.base_model, self.lora_factors(), -1)
        self.merged_adapter = None

    def merge_and_unload(self) -> nn.Module:
        """Merge the active adapter and return the plain base model (adapted modules unwrapped). This model is
        then unloaded: its forward is the returned base's, and every adapter call is refused."""
        self.check_state("merge_and_unload()")
        if self.merged_adapter is None:
            self.merge()
        for layer_name, module in list(self.base_model.named_modules()):
            if isinstance(module, AdaptedLayer):
                set_submodule(self.base_model, layer_name, module.base_layer)
            elif isinstance(module, ModuleCopies):
                dtype = float_dtype(module.original)  # an fp32 trained copy goes back in the base's dtype
                set_submodule(self.base_model, layer_name, module.active.to(dtype) if dtype else module.active)
        for hook in self._hooks:
            hook.remove()
        self._unloaded = True
        return self.base_model

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the base model alone (a merged adapter is unmerged for the duration; heads are the base's).
        Blocks nest: the adapters stay off until the outermost one exits."""
        self.check_state("disabled()", inside_disabled=True)
        merged = self.merged_adapter if not self._disabled_depth else None
        if merged is not None:
            self.unmerge()
        self._disabled_depth += 1
        self.cache.disabled = True
        try:
            yield
        finally:
            self._disabled_depth -= 1
            if not self._disabled_depth:
                self.cache.disabled = False
                if merged is not None:
                    self.merge()

    # ----------------------------------------------------------------- persistence
    def save_adapter(self, path: str | Path) -> Path:
        """Write the active adapter (config, layout, tensors) to the directory ``path``."""
        self.check_state("save_adapter()", inside_disabled=True)
        info = {
            "num_parameters": self.num_parameters(),
            # how to rebuild the base for export/serving: a transformers class name and its label count
            "base_model_class": type(self.base_model).__name__,
            "num_labels": getattr(getattr(self.base_model, "config", None), "num_labels", None),
        }
        tensors = self.adapter_tensors()  # every rank of a sharded model gathers (collectives) ...
        if not is_main_process():
            return Path(path)  # ... and one writes
        info["checksums"] = integrity.describe(self.projection, self.adapter_config, tensors, info)
        return files.write_adapter(path, self.adapter_config, self.layout, tensors, info)

    def export_peft_lora(self, path: str | Path, max_rank: int | None = None, allow_truncation: bool = False) -> Path:
        """Write the active adapter as a plain PEFT LoRA adapter (rank r, alpha = r, scale folded into B).

        ``max_rank`` (a server's limit, e.g. vLLM's max_lora_rank): where r exceeds it, ΔW is re-factorised
        by SVD at rank <= max_rank, exactly when its rank allows, else refused with the error a cut would
        cause; ``allow_truncation=True`` writes the cut and records its error (rank_limit.py).
        """
        files.refuse_export_over_adapter(path)  # never over a saved adapter or into a run dir
        self.check_state("export_peft_lora()", inside_disabled=True)
        with torch.no_grad():
            factors = self.lora_factors()
        export_config, record = self.adapter_config, None
        if max_rank is not None and check_max_rank(max_rank) < max(a.shape[0] for a, _ in factors.values()):
            factors, rank, cuts = limit_rank(factors, max_rank, allow_truncation)
            export_config, record = dataclasses.replace(export_config, rank=rank), cut_record(max_rank, rank, cuts)
        _, heads = split_adapter_tensors(self.adapter_tensors())
        layers = {layer.module_name: layer for layer in self.adapted_layers() if layer.module_name in factors}
        keys = {name: layer.peft_factor_keys for name, layer in layers.items()}
        fan_in_fan_out = any(layer.fan_in_fan_out for layer in layers.values())
        if not is_main_process():  # every rank gathered; one writes
            return Path(path)
        base_path = peft_base_path(self.adapter_config.base_model_name_or_path, self.base_model)
        task_type = peft_task_type(self.base_model)
        for name in implied_head_modules(task_type, self.base_model, heads):  # the base's own (frozen) head
            heads[name] = {k: v.detach() for k, v in self.base_model.get_submodule(name).state_dict().items()}
        out = files.write_peft_lora(
            path,
            export_config,
            factors,
            heads,
            keys,
            fan_in_fan_out,
            task_type=task_type,
            base_model_name_or_path=base_path,
        )
        if record is not None:
            files.atomic_write_json(out / EXPORT_RECORD, record)
            files.atomic_write(out / "README.md", card_writer(record))
        return out

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a saved adapter holds: projection tensors + the active copies of saved modules."""
        active = self.active_adapter
        heads = {
            name: module.copies[active]
            for name, module in self.base_model.named_modules()
            if isinstance(module, ModuleCopies) and active is not None and active in module.copies
        }
        params = [*self.projection.parameters(), *(p for head in heads.values() for p in head.parameters())]
        with gathered(params):  # ZeRO-3: whole tensors for the duration (FSDP's DTensors: full() below)
            tensors = {f"projection.{k}": full(v).clone() for k, v in self.projection.adapter_state_dict().items()}
            for name, head in heads.items():
                for key, value in head.state_dict().items():
                    tensors[f"modules_to_save.{name}/{key}"] = full(value.detach()).clone()
        return tensors

    # ----------------------------------------------------------------- training conveniences
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Non-reentrant checkpointing: recomputed layers read the same θ_D pieces (reentrant cannot)."""
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        cast(Any, self.base_model).gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def _base_device(self) -> torch.device:
        return next(self.base_model.parameters()).device

    def _wrap_targets(self, layout: Layout) -> None:
        for entry in layout:
            module = self.base_model.get_submodule(entry.name)
            if not isinstance(module, AdaptedLayer):
                wrapper = wrap_module(module, entry.name, self.cache).train(module.training)  # the mode it wraps
                set_submodule(self.base_model, entry.name, wrapper)

    def _wrap_module_to_save(self, pattern: str) -> ModuleCopies:
        names = [n for n, _ in self.base_model.named_modules() if n == pattern or n.endswith("." + pattern)]
        names = [n for n in names if ".original" not in n and ".copies." not in n]
        if not names:
            top = [n for n, _ in self.base_model.named_children()]
            raise TargetModulesError(f"modules_to_save entry {pattern!r} matched no module; top-level modules: {top}")
        module = self.base_model.get_submodule(names[0])
        if not isinstance(module, ModuleCopies):
            module = ModuleCopies(module, self.cache).train(module.training)
            set_submodule(self.base_model, names[0], module)
        return module


def refuse_adapted_base(base_model: nn.Module) -> None:
    """One base carries one AdaptedModel: a second would find the first's layers already wrapped and run on
    the first's θ_D, so its own adapter would silently get no gradients."""
    if any(isinstance(m, (AdaptedLayer, ModuleCopies)) for m in base_model.modules()):
        raise AdapterStateError(
            f"this {type(base_model).__name__} already carries an adapted model (its layers are wrapped); add "
            "another adapter with model.add_adapter(name, config) or model.load_adapter(path, name), or attach "
            "to the plain base that merge_and_unload() returns"
        )


def load_adapter(base_model: nn.Module, path: str | Path, adapter_name: str = DEFAULT_ADAPTER) -> AdaptedModel:
    """Attach the adapter saved at ``path`` to ``base_model``; every check runs before the base is touched."""
    refuse_adapted_base(base_model)
    config, projection, heads = checked_adapter(path, base_model)
    model = AdaptedModel(base_model, config, adapter_name, _projection=projection)
    load_heads(base_model, adapter_name, heads, path)
    model.cache.invalidate()
    return model


def attach(base_model: nn.Module, config: AdapterConfig, adapter_name: str = DEFAULT_ADAPTER) -> AdaptedModel:
    """Wrap ``base_model`` (in place, frozen) with one adapter made from ``config``."""
    return AdaptedModel(base_model, config, adapter_name)
