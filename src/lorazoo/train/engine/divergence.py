"""Divergence stop: a run whose smoothed training loss stays above k × its initial value is failed, not
reported as a result.

The smoothed loss is an exponential moving average (weight ``SMOOTHING`` on the newest value) of the
losses Trainer logs every ``trainer.logging_steps``; the initial value is the first logged loss. Once the
smoothed loss exceeds ``trainer.divergence_factor`` × initial for ``trainer.divergence_patience``
consecutive logs, training stops with DivergedError. While the loss is above the threshold no checkpoint
is saved, so the last checkpoint on disk is from before the blow-up (the last good one).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import TrainerCallback

from lorazoo.errors import LoraZooError

SMOOTHING = 0.5


class DivergedError(LoraZooError, FloatingPointError):
    """The training loss rose far above its initial value and stayed there."""


class DivergenceStop(TrainerCallback):
    def __init__(self, factor: float | None, patience: int, last_good: Any):
        self.factor = factor
        self.patience = patience
        self.last_good = last_good  # () -> str: where the last good checkpoint is, for the message
        self.initial: float | None = None
        self.smoothed: float | None = None
        self.above = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if self.factor is None or loss is None or not math.isfinite(loss):
            return  # a non-finite loss is NonFiniteGuard's to report
        if self.initial is None or self.smoothed is None:
            self.initial = self.smoothed = float(loss)
            return
        self.smoothed = SMOOTHING * float(loss) + (1 - SMOOTHING) * float(self.smoothed)
        threshold = self.factor * self.initial
        if self.smoothed <= threshold:
            self.above = 0
            return
        self.above += 1
        control.should_save = False  # a checkpoint of a diverging run is not a good one
        if self.above >= self.patience:
            raise DivergedError(
                f"diverged: smoothed train loss {self.smoothed:.4g} > {self.factor:g} × initial {self.initial:.4g} for "
                f"{self.above} logging steps (step {state.global_step}); {self.last_good()}; lower the learning rate, "
                "or raise trainer.divergence_factor / trainer.divergence_patience (null turns the check off)"
            )
