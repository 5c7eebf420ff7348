"""Stage 6: metrics.json. The job's identity is written one way for every record; the running record is built
once when training starts and extended by the outcome (completed) or the error (failed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lorazoo.files import atomic_write_json
from lorazoo.train.engine.best import checkpoint_scores
from lorazoo.train.engine.distributed import is_rank_zero, world_size
from lorazoo.train.engine.tracking import RunLogger
from lorazoo.train.errors import NonFiniteMetricError
from lorazoo.train.evaluation.harness import flat_scores
from lorazoo.train.records import progress, provenance, run_dir
from lorazoo.train.records.recorded import Redactor
from lorazoo.train.records.run_dir import Claim
from lorazoo.train.records.run_record import recorded_score
from lorazoo.train.stages.build import Built
from lorazoo.train.stages.plan import Plan
from lorazoo.train.stages.setup import RunSetup
from lorazoo.train.stages.training import Outcome
from lorazoo.train.sweep import slurm_attempt
from lorazoo.version import __version__


def job_identity(task: Any, projection: Any, model: Any, seed: Any, hydra: dict[str, Any], out: Path) -> dict[str, Any]:
    """Which job this is and how it was started: the head of every metrics.json, failed or completed."""
    return {
        "task": task,
        "projection": projection,
        "model": model,
        "seed": seed,
        "command": provenance.job_command(sys.argv, hydra.get("overrides", []), bool(hydra.get("multirun"))),
        "argv": list(sys.argv),
        "overrides": hydra.get("overrides", []),
        "output_dir": str(out),
        "lorazoo_version": __version__,
    }


def early_record(cfg: DictConfig, hydra: dict[str, Any], out: Path) -> dict[str, Any]:
    """What is known about a run before its options are checked (for a failed metrics.json): the values as
    written, unresolved, so a bad or secret ``${oc.env:...}`` neither raises here nor reaches the file."""
    raw = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_dict(cfg) else {}
    raw = raw if isinstance(raw, dict) else {}

    def name(group: str) -> Any:
        node = raw.get(group)
        return node.get("name") if isinstance(node, dict) else None

    return job_identity(name("task"), name("projection"), name("model"), raw.get("seed"), hydra, out)


def running_record(setup: RunSetup, plan: Plan, built: Built, claim: Claim, out: Path) -> dict[str, Any]:
    """The record of a run whose training is about to start."""
    task, counts = plan.task, built.counts
    return {
        "status": "running",
        **job_identity(task.name, plan.projection.name, setup.model.name, setup.seed, setup.hydra, out),
        "cwd": os.getcwd(),
        "config_used": provenance.CONFIG_USED,
        **provenance.code_record(),
        "data_sha256": provenance.data_checksums(plan.data_files),
        "eval_split": setup.eval_split,
        "eval_selection": task.eval_selection(),
        "model_source": built.loaded.source,
        "parameters": counts,
        "trainable": counts["trainable"],
        "D": counts["D"],
        "task_overrides_applied": setup.applied,
        "world_size": world_size(),
        "data_from": setup.data_from,
        "fitted_to_model": {c.key: {"from": c.old, "to": c.new, "why": c.why} for c in plan.changes},
        "fingerprint": claim.fingerprint,
        **({"attempts": tried} if (tried := slurm_attempt.attempts(out)) else {}),  # Slurm attempts of this job
        **task.metric_meaning(),  # main_metric, greater_is_better: what ranks this run (sweeps, compare, summary)
        **task.summary(),
    }


def completed(record: dict[str, Any], setup: RunSetup, plan: Plan, built: Built, outcome: Outcome, out: Path) -> None:
    """``record`` extended by what training and evaluation produced; status completed."""
    state, metrics = built.trainer.state, outcome.metrics
    wall = built.clock.prior_s + outcome.session_s
    prior_cpu = built.clock.prior_cpu_s
    record.update(
        status="completed",
        artifacts=run_dir.artifact_hashes(out),  # "completed" holds only while these files are as recorded
        **{k: metrics[k] for k in plan.task.metric_keys() if k in metrics},
        metrics=metrics,
        **plan.task.report(),
        **({"lm_eval": outcome.lm_eval} if outcome.lm_eval else {}),
        eval_timing=outcome.timing,
        checkpoints=checkpoint_scores(
            state, built.best_metric, bool(built.trainer.args.greater_is_better), setup.trainer.load_best_model_at_end
        ),
        steps=state.global_step,
        wall_time_s=round(wall, 3),
        # CPU seconds of training (this process and its finished data-loader workers), every part of a resumed run
        # (cpu_time.json); null when the part resumed from has no CPU record
        cpu_time_s=None if prior_cpu is None else round(prior_cpu + outcome.session_cpu_s, 3),
        train={
            "steps": state.global_step,
            "epochs": state.epoch,
            "wall_time_s": round(wall, 3),
            "this_session_s": round(outcome.session_s, 3),
            "this_session_cpu_s": round(outcome.session_cpu_s, 3),
            **_train_loss(built.curves, outcome.trainer_loss),
            "resumed_from": built.resume_from,
        },
    )


def publish(record: dict[str, Any], redact: Redactor, logger: RunLogger, out: Path) -> None:
    """A completed record written (rank 0), logged to the tracker and printed."""
    if is_rank_zero():
        atomic_write_json(out / "metrics.json", redact(record))
    flat = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
    logger.summary(redact(flat | flat_scores(record.get("lm_eval", {}))))
    logger.finish()
    if is_rank_zero():
        print_summary(record, out)
        progress.report_job(record)


def failed(record: dict[str, Any], exc: BaseException, redact: Redactor, logger: RunLogger, out: Path) -> None:
    """``record`` marked failed by ``exc`` (training had started), written, and ``exc`` marked as recorded."""
    record.update(status="failed", reason=failure_reason(exc), error=f"{type(exc).__name__}: {exc}")
    if is_rank_zero():
        atomic_write_json(out / "metrics.json", redact(record))
        progress.report_job(record)
        if "adapter_dir" in record:
            print(f"[lorazoo] training finished before the failure: the adapter is at {record['adapter_dir']}")
    logger.finish(exit_code=1)
    exc._lorazoo_recorded = True  # type: ignore[attr-defined]
    exc._lorazoo_failed_stage = "training"  # type: ignore[attr-defined]  # cli: one failed trial of a sweep


def failure_reason(exc: BaseException) -> str:
    """A short word for metrics.json ``reason`` (compare lists failed runs by it)."""
    from lorazoo.train.engine.divergence import DivergedError
    from lorazoo.train.errors import NonFiniteLossError

    for cls, reason in (
        (DivergedError, "diverged"),
        (NonFiniteLossError, "non-finite loss"),
        (NonFiniteMetricError, "non-finite metric"),
        (KeyboardInterrupt, "interrupted"),
    ):
        if isinstance(exc, cls):
            return reason
    return type(exc).__name__


def _train_loss(curves: Any, trainer_loss: float | None) -> dict[str, Any]:
    """The mean training loss over every step of the run, from curves.jsonl (Trainer's covers only its own
    ``train()`` call, and its unlogged tail is rank 0's alone); ``train_loss_steps`` says how many steps it
    averages (fewer only when resumed from a checkpoint written before curves.jsonl existed)."""
    loss, covered = curves.train_loss()
    return {"train_loss": loss if covered else trainer_loss, "train_loss_steps": covered or None}


def print_summary(record: dict[str, Any], out: Path) -> None:
    """One line: the main metric (named and directed by the record's metric meaning), sizes, steps, time."""
    progress.say(
        f"[lorazoo] {record['task']} / {record['projection']} / {record['model']} (seed {record['seed']}): "
        f"{record.get('eval_split', 'dev')} {_main_score(record)} | trainable {record['trainable']:,} of D "
        f"{record['D']:,} | {record['steps']} steps in {record['wall_time_s']:.1f} s | {out / 'metrics.json'}",
        file=sys.stdout,
    )


def _main_score(record: dict[str, Any]) -> str:
    """``accuracy=0.8100 (higher is better)``, plus the majority-class rate beside it when the task reports one."""
    name = record.get("main_metric")
    value = recorded_score(record, name) if name is not None else None
    shown = []
    if name is not None and isinstance(value, float):
        shown.append(f"{name}={value:.4f} ({'higher' if record.get('greater_is_better') else 'lower'} is better)")
    if "majority_rate" in record:
        shown.append(f"majority_rate={record['majority_rate']:.4f}")
    return " ".join(shown)
