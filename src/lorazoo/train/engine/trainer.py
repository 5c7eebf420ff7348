"""transformers.Trainer, taught four things: the optimizer from the one optimizer spec (per-group
learning rates over ``model.parameter_groups()``), adapter-only checkpoints (never the base weights)
that resume bit-exactly, a stop on NaN/inf and a stop on divergence. Checkpoint marks and rotation live in
checkpoints.py: only lorazoo's own folders are deleted."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from lorazoo.train.engine.divergence import DivergenceStop
from lorazoo.train.engine.optimizer import OptimizerOptions, build_optimizer
from lorazoo.train.errors import NonFiniteLossError, WriteFailedError
from lorazoo.train.options import TrainerOptions
from lorazoo.train.records import checkpoints as marks
from lorazoo.train.records.checkpoints import COMPLETE_MARKER

__all__ = ["COMPLETE_MARKER", "LoraZooTrainer", "last_complete_checkpoint"]


def last_complete_checkpoint(directory: str | Path) -> str | None:
    """The newest checkpoint-N under ``directory`` whose writing finished (interrupted ones are skipped)."""
    done = marks.complete_checkpoints(directory)
    return str(done[-1]) if done else None


def _finished_checkpoint(checkpoint: Any) -> Any:
    """The TrainerState of ``checkpoint`` when it was saved at the last step of its run, else None."""
    from transformers import TrainerState

    path = Path(str(checkpoint)) / "trainer_state.json" if isinstance(checkpoint, (str, Path)) else None
    if path is None or not path.is_file():
        return None
    state = TrainerState.load_from_json(str(path))
    return state if state.max_steps and state.max_steps > 0 and state.global_step >= state.max_steps else None


class NonFiniteGuard(TrainerCallback):
    """Stops before an optimiser step whose gradients hold NaN/inf: parameters and checkpoints stay finite."""

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        for name, param in model.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                raise NonFiniteLossError(
                    f"non-finite gradient in {name} at step {state.global_step + 1}; "
                    f"stopped before the update ({_last_good(args.output_dir)})"
                )


def _last_good(output_dir: str | None) -> str:
    last = last_complete_checkpoint(output_dir) if output_dir is not None else None
    return f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"


class LoraZooTrainer(Trainer):
    """The adapter is the only thing trained and the only thing saved.

    Checkpoints hold the adapter (``adapter_config.json`` + ``adapter.safetensors``) plus Trainer's
    optimizer, scheduler, RNG and trainer state; a ``checkpoint_complete`` marker is written last.
    """

    def __init__(
        self,
        *args: Any,
        optimizer_options: OptimizerOptions,
        trainer_options: TrainerOptions | None = None,
        run_fingerprint: str | None = None,
        **kwargs: Any,
    ):
        self.optimizer_options = optimizer_options
        self.trainer_options = trainer_options or TrainerOptions()
        self.run_fingerprint = run_fingerprint
        super().__init__(*args, **kwargs)
        self.add_callback(NonFiniteGuard())
        self.add_callback(
            DivergenceStop(
                self.trainer_options.divergence_factor,
                self.trainer_options.divergence_patience,
                lambda: _last_good(self.args.output_dir),
            )
        )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Trainer.train, with the adapter lifecycle told that training is on (set_adapter is refused meanwhile)."""
        finished = _finished_checkpoint(kwargs.get("resume_from_checkpoint"))
        if finished is not None:
            # Trainer would take one more step past max_steps from a final checkpoint; this run's training is done
            from transformers.trainer_utils import TrainOutput

            self._load_from_checkpoint(kwargs["resume_from_checkpoint"])
            self.state = finished
            if self.args.load_best_model_at_end:  # what the finished run's end would have loaded
                self._load_best_model()
            return TrainOutput(finished.global_step, None, {})  # type: ignore[arg-type]
        target = self._adapted()
        guard = getattr(target, "training_guard", None)
        if guard is None:
            return super().train(*args, **kwargs)
        with guard():
            return super().train(*args, **kwargs)

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
            raise NonFiniteLossError(
                f"loss is {float(loss)} at step {self.state.global_step + 1}; "
                f"stopped before the update ({_last_good(self.args.output_dir)})"
            )
        return loss

    # ------------------------------------------------------------------ adapter-only checkpoints
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Every rank enters (a sharded θ is gathered collectively); rank 0 writes the adapter, never the base."""
        self._adapted().save_adapter(output_dir or self.args.output_dir)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            self._adapted().save_adapter(output_dir or self.args.output_dir)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"checkpoint-{self.state.global_step}"
        if self.args.should_save:
            marks.mark_writing(folder, self.run_fingerprint)
        try:
            super()._save_checkpoint(model, trial)  # args.save_total_limit is None: Trainer itself deletes nothing
        except RuntimeError as exc:  # a full disk reaches torch.save as a RuntimeError: one line naming the folder
            failed = WriteFailedError.from_torch(folder, exc)
            if failed is None:
                raise
            raise failed from exc
        if self.args.should_save:
            marks.mark_complete(folder, self.state.global_step, self.run_fingerprint)
            marks.rotate(run_dir, self.trainer_options.save_total_limit, self.state.best_model_checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self._adapted().load_adapter_weights(resume_from_checkpoint)  # FSDP passes its wrapper: the adapter is inside

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best and os.path.isdir(best):
            self._adapted().load_adapter_weights(best)
