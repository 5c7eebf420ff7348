"""Best vs last: which evaluated step is best, and what metrics.json says about the final and the best one.

Trainer tracks the best evaluation by ``metric_for_best_model`` (we always set it, so the best step is
known even when the adapter kept is the last one); ``load_best_model_at_end`` decides which the saved
adapter holds. Papers often report the best evaluated step (VB-LoRA's GLUE protocol), lorazoo's default
the final one: the record states both, and which one the adapter is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorazoo.train.errors import ConfigError
from lorazoo.train.options import TrainerOptions


def best_metric_name(options: TrainerOptions, metric_keys: list[str], loss_only: bool) -> str:
    """``trainer.metric_for_best_model``, or the task's main metric; it must be one that evaluation reports."""
    valid = ["loss"] if loss_only or not metric_keys else [*metric_keys, "loss"]
    chosen = options.metric_for_best_model or valid[0]
    if chosen.removeprefix("eval_") not in valid:
        raise ConfigError(
            f"trainer.metric_for_best_model={chosen!r} is not a score this task's evaluation reports; valid: {valid}"
        )
    return chosen.removeprefix("eval_")


def best_greater_is_better(options: TrainerOptions, metric: str, meaning: Mapping[str, Any]) -> bool:
    """``trainer.greater_is_better``, else the direction the task declares for its main metric
    (``Task.metric_meaning``), lower-first for the loss; for another of the task's scores, Trainer's rule
    (higher first unless the name ends in "loss"), as configs/trainer/default.yaml states."""
    if options.greater_is_better is not None:
        return bool(options.greater_is_better)
    if metric == meaning["main_metric"]:
        return bool(meaning["greater_is_better"])
    return not metric.endswith("loss")


def evaluations(log_history: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Trainer's logged evaluations by step (the last one logged at a step wins)."""
    return {int(e["step"]): e for e in log_history if "eval_loss" in e and "step" in e}


def loaded_best_step(state: Any, load_best: bool) -> int | None:
    """The step whose checkpoint Trainer loaded at the end (load_best_model_at_end), or None: Trainer loads
    ``best_model_checkpoint`` only while it names the best step's folder."""
    step, folder = state.best_global_step, state.best_model_checkpoint
    if not load_best or not step or not folder or Path(folder).name != f"checkpoint-{step}":
        return None
    return int(step)


def held_evaluation(state: Any, load_best: bool) -> dict[str, Any] | None:
    """The logged evaluation of the parameters the model now holds: the best step's after Trainer loaded it,
    else the last step's (None when that step was not evaluated)."""
    step = loaded_best_step(state, load_best) or state.global_step
    return evaluations(state.log_history).get(int(step))


def checkpoint_scores(state: Any, metric: str, greater_is_better: bool, load_best: bool) -> dict[str, Any]:
    """metrics.json ``checkpoints``: the final and the best evaluated step's scores, and which the adapter holds."""
    evals = evaluations(state.log_history)
    held = loaded_best_step(state, load_best)

    def scores(step: int) -> dict[str, Any]:
        entry = evals[step]
        named = {k.removeprefix("eval_"): v for k, v in entry.items() if k.startswith("eval_")}
        return {"step": step, **{k: v for k, v in named.items() if k != "runtime" and not k.endswith("_per_second")}}

    best_step = int(state.best_global_step) if state.best_global_step and state.best_global_step in evals else None
    holds_best = held is not None and held == best_step
    return {
        "metric_for_best_model": metric,
        "greater_is_better": greater_is_better,
        "final": scores(max(evals)) if evals else None,
        "best": scores(best_step) if best_step is not None else None,
        "adapter_holds": "best" if holds_best else "final",
        "adapter_step": best_step if holds_best else state.global_step,
    }
