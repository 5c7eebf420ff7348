"""Stage 5: train, save the adapter, evaluate (Trainer's evaluation, the task's own, lm-eval)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lorazoo.train.engine.best import held_evaluation
from lorazoo.train.engine.distributed import is_rank_zero
from lorazoo.train.engine.tracking import RunLogger
from lorazoo.train.errors import NonFiniteMetricError
from lorazoo.train.records import provenance
from lorazoo.train.records.naming import run_name, wandb_group
from lorazoo.train.records.run_dir import Claim
from lorazoo.train.stages.build import Built
from lorazoo.train.stages.plan import Plan
from lorazoo.train.stages.setup import RunSetup

if TYPE_CHECKING:
    from lorazoo.model import AdaptedModel

TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


@dataclass(frozen=True)
class Outcome:
    """What one training session and the final evaluation produced."""

    session_s: float  # wall seconds of this session's ``train()``
    session_cpu_s: float
    trainer_loss: float | None  # Trainer's mean loss of this session (the record prefers curves.jsonl's)
    metrics: dict[str, float]
    timing: dict[str, float]  # Trainer's evaluation speed numbers
    lm_eval: dict[str, Any]


def start_tracking(logger: RunLogger, setup: RunSetup, plan: Plan, built: Built, claim: Claim, out: Path) -> None:
    """The W&B run (when logger=wandb), named and grouped without any ${oc.env:...} value."""
    redact, hydra, task = setup.redact, setup.hydra, plan.task.name
    logger.start(
        out,
        {**setup.shown, "parameters": built.counts},
        group=redact(wandb_group(setup.shown.get("name"), hydra.get("experiment"), hydra.get("sweep_dir"))),
        job_type=redact(task),
        name=redact(run_name(plan.projection.name, task, setup.model.name, setup.seed)),
        resume=built.resume_from is not None or claim.resume,
    )


def train_and_evaluate(plan: Plan, built: Built, record: dict[str, Any], out: Path) -> Outcome:
    """Train; save the adapter (``record["adapter_dir"]``) before the final evaluation, so a failing metric,
    generation or lm-eval keeps what was trained."""
    started, cpu = time.perf_counter(), provenance.CpuClock()
    result = built.trainer.train(resume_from_checkpoint=built.resume_from)
    session, session_cpu = time.perf_counter() - started, cpu.elapsed()
    model, tokenizer = built.loaded.model, built.loaded.tokenizer
    adapter_dir = cast("AdaptedModel", model).save_adapter(out / "adapter")  # every rank (a sharded θ is gathered)
    record["adapter_dir"] = str(adapter_dir)
    metrics, timing = split_metrics(final_eval(built.trainer))
    metrics.update(plan.task.derived_metrics(metrics))
    metrics.update(plan.task.final_evaluate(built.trainer, model, tokenizer, out))
    require_finite(metrics)
    harness = plan.harness
    lm_eval = harness.evaluate(model, tokenizer, out) if harness and is_rank_zero() else {}
    return Outcome(session, session_cpu, result.training_loss, metrics, timing, lm_eval)


def final_eval(trainer: Any) -> dict[str, float]:
    """Trainer's evaluation of the parameters the model holds (the last step's, or the best evaluated step's
    after load_best_model_at_end): the one it logged for them if any, else a new one."""
    held = held_evaluation(trainer.state, bool(trainer.args.load_best_model_at_end))
    return dict(held) if held is not None else trainer.evaluate()


def split_metrics(raw: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Trainer's eval_* dict → (metrics without the prefix, timing numbers)."""
    metrics: dict[str, float] = {}
    timing: dict[str, float] = {}
    for key, value in raw.items():
        if key == "step":
            continue
        name = key.removeprefix("eval_")
        (timing if name in TIMING else metrics)[name] = value
    return metrics, timing


def require_finite(metrics: dict[str, Any]) -> None:
    """A NaN/inf metric is no result: the run fails naming it (a constant prediction, a NaN label...)."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise NonFiniteMetricError(
            f"non-finite final metric(s) {bad}; the run is failed, not reported (check the "
            "eval data for NaN labels and the predictions for a constant output)"
        )
