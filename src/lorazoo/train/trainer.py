"""transformers.Trainer, taught three things: the optimizer from the one optimizer spec (per-group
learning rates over ``model.parameter_groups()``), adapter-only checkpoints (never the base weights)
that resume bit-exactly, and a stop on NaN/inf."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ..io import atomic_write
from .errors import NonFiniteLossError
from .optimizer import OptimizerOptions, build_optimizer

COMPLETE_MARKER = "checkpoint_complete"  # written last: a checkpoint without it was interrupted
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_complete_checkpoint(directory: str | Path) -> str | None:
    """The newest checkpoint-N under ``directory`` whose writing finished (interrupted ones are skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    done = [(int(m.group(1)), p) for p in directory.iterdir()
            if (m := _CHECKPOINT.match(p.name)) and (p / COMPLETE_MARKER).is_file()]
    return str(max(done)[1]) if done else None


class NonFiniteGuard(TrainerCallback):
    """Stops before an optimiser step whose gradients hold NaN/inf: parameters and checkpoints stay finite."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        for name, param in model.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                raise NonFiniteLossError(f"non-finite gradient in {name} at step {state.global_step + 1}; "
                                         f"stopped before the update ({_last_good(args.output_dir)})")


def _last_good(output_dir: str) -> str:
    last = last_complete_checkpoint(output_dir)
    return f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"


class LoraZooTrainer(Trainer):
    """The adapter is the only thing trained and the only thing saved.

    Checkpoints hold the adapter (``adapter_config.json`` + ``adapter.safetensors``) plus Trainer's
    optimizer, scheduler, RNG and trainer state; a ``checkpoint_complete`` marker is written last.
    """

    def __init__(self, *args: Any, optimizer_options: OptimizerOptions, **kwargs: Any):
        self.optimizer_options = optimizer_options
        super().__init__(*args, **kwargs)
        self.add_callback(NonFiniteGuard())

    def _adapted(self) -> Any:
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=False)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """``build_optimizer`` from the optimizer spec, built lazily the way Trainer builds its own.

        Not ``Trainer(optimizers=(opt, None))``: transformers refuses a pre-built optimizer under
        FSDP ("Passing `optimizers` is not allowed if PyTorch FSDP is enabled"), and this hook runs
        after Trainer/accelerate have placed or wrapped the model. The scheduler is Trainer's own
        (trainer.lr_scheduler, trainer.warmup_ratio) over these groups.
        """
        if self.optimizer is None:
            self.optimizer = build_optimizer(self._adapted(), self.optimizer_options)
        return self.optimizer

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """Trainer's FLOP estimate, from the base model (AdaptedModel.num_parameters means adapter counts)."""
        base = self._adapted().base_model
        ids = inputs.get("input_ids")
        if ids is None or not hasattr(base, "num_parameters"):
            return 0
        return 6 * ids.numel() * base.num_parameters(exclude_embeddings=True)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not math.isfinite(float(loss)):
            raise NonFiniteLossError(f"loss is {float(loss)} at step {self.state.global_step + 1}; "
                                     f"stopped before the update ({_last_good(self.args.output_dir)})")
        return loss

    # ------------------------------------------------------------------ adapter-only checkpoints
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Every rank enters (a sharded θ is gathered collectively); rank 0 writes the adapter, never the base."""
        self._adapted().save_adapter(output_dir or self.args.output_dir)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            self._adapted().save_adapter(output_dir or self.args.output_dir)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            atomic_write(folder / COMPLETE_MARKER, lambda tmp: Path(tmp).write_text(f"{self.state.global_step}\n"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self._adapted().load_adapter_weights(resume_from_checkpoint)  # FSDP passes its wrapper: the adapter is inside

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best and os.path.isdir(best):
            self._adapted().load_adapter_weights(best)
