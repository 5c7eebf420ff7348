"""One training job from a composed config: data → model + adapter → Trainer → metrics.json + adapter/."""

from __future__ import annotations

import contextlib
import copy
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from lorazoo.errors import LoraZooError
from lorazoo.files import atomic_write_json
from lorazoo.projections import get_projection_class
from lorazoo.train.config import preflight
from lorazoo.train.config import schema as config_schema
from lorazoo.train.config.model_fit import Change, explicit_keys, fit_projection, meta_layout
from lorazoo.train.engine.best import best_metric_name, checkpoint_scores, held_evaluation
from lorazoo.train.engine.distributed import (
    adopt_slurm_environment,
    agree_on_output_dir,
    check_data_parallel,
    check_engine,
    decided_on_rank_zero,
    is_rank_zero,
    scale_arguments,
    world_size,
)
from lorazoo.train.engine.optimizer import OptimizerOptions, check_groups
from lorazoo.train.engine.tracking import RunLogger
from lorazoo.train.errors import ConfigError, DataUnavailableError, NonFiniteMetricError
from lorazoo.train.evaluation.harness import eval_options, flat_scores
from lorazoo.train.evaluation.harness import prepare as prepare_lm_eval
from lorazoo.train.loading.base_model import adapter_config, load_adapted_model
from lorazoo.train.options import (
    LoggerOptions,
    ModelOptions,
    ProjectionOptions,
    TrainerOptions,
    from_node,
    to_plain,
)
from lorazoo.train.records import progress, provenance, run_dir
from lorazoo.train.records.checkpoints import foreign_checkpoints, resume_point
from lorazoo.train.records.naming import register_resolvers, run_name, wandb_group
from lorazoo.train.records.recorded import Redactor, recorded
from lorazoo.train.records.run_record import CPU_TIME, prior_train_time, write_failure
from lorazoo.train.sweep import slurm_attempt
from lorazoo.train.tasks import build_task
from lorazoo.train.tasks.base import recording_reads
from lorazoo.train.tasks.data_root import apply_data_root
from lorazoo.version import __version__

if TYPE_CHECKING:
    from lorazoo.model import AdaptedModel

register_resolvers()

_MISSING = object()
TIMING = ("runtime", "samples_per_second", "steps_per_second", "epoch")


def _hydra_context() -> dict[str, Any]:
    """Output dir, overrides and sweep name from Hydra when running under it; empty otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    return {
        "output_dir": hc.runtime.output_dir,
        # as typed: an ${oc.env:...} in an override stays text (its value is never recorded)
        "overrides": [str(o) for o in cast("list[Any]", OmegaConf.to_container(hc.overrides.task, resolve=False))],
        "experiment": hc.runtime.choices.get("experiment"),
        "sweep_dir": hc.sweep.dir if multirun else None,
        "multirun": multirun,
    }


def apply_task_overrides(cfg: DictConfig, explicit: list[str]) -> tuple[DictConfig, dict[str, Any]]:
    """Apply ``task_overrides[<task name>]`` ({dotted key: value}, a paper's per-task table) to a copy of
    ``cfg``; keys also given on the command line keep the command-line value."""
    table = to_plain(cfg.get("task_overrides")) or {}
    if table and str(cfg.task.name) not in table:  # a paper's table without this task: its defaults are no setting
        raise ConfigError(
            f"experiment {cfg.get('name')!r} has no settings for task {str(cfg.task.name)!r}; "
            f"its tasks: {sorted(table)}"
        )
    entry = table.get(str(cfg.task.name)) or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in explicit}
    cfg = copy.deepcopy(cfg)
    applied = {}
    for key, value in entry.items():
        # optimizer.groups.<group>.* may name a group the base config leaves unset (a per-task head lr)
        if OmegaConf.select(cfg, key, default=_MISSING) is _MISSING and not key.startswith("optimizer.groups."):
            raise ConfigError(f"task_overrides[{cfg.task.name!r}] sets unknown key {key!r}")
        if key not in given:
            with open_dict(cfg):  # an optimizer.groups.<group> entry may be new
                OmegaConf.update(cfg, key, value, merge=False)
            applied[key] = value
    return cfg, applied


def training_arguments(
    t: TrainerOptions, out: Path, seed: int, report_to: list[str], loss_only: bool, best_metric: str | None = None
) -> Any:
    """The loop's settings. No lr, decay, betas or eps here: those reach the optimizer only through
    configs/optimizer/ and build_optimizer (LoraZooTrainer.create_optimizer). ``best_metric``: the score
    Trainer tracks the best evaluated step by (train/best.py)."""
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16",
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        eval_strategy=t.eval_strategy,
        eval_steps=t.eval_steps,
        save_strategy=t.eval_strategy if t.load_best_model_at_end else "steps",  # best: saved where evaluated
        save_steps=t.save_steps,
        load_best_model_at_end=t.load_best_model_at_end,
        metric_for_best_model=best_metric,
        greater_is_better=t.greater_is_better,
        save_total_limit=None,  # rotation is checkpoints.rotate: it deletes lorazoo's own folders only
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        report_to=report_to,
        seed=seed,
        data_seed=seed,
        full_determinism=t.deterministic,
        dataloader_num_workers=t.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not t.progress_bar,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=loss_only,
        push_to_hub=False,
        save_only_model=False,
        **scale_arguments(t),
    )
    check_data_parallel(args)
    return args


def _resume_point(
    checkpoints: Path, resume: bool, fingerprint: str | None = None, adapter: dict[str, Any] | None = None
) -> str | None:
    """The last complete checkpoint of this run (see checkpoints.resume_point); None when not resuming."""
    if not resume:
        for folder in foreign_checkpoints(checkpoints):
            print(f"[lorazoo] {folder} has no lorazoo checkpoint mark: left alone", file=sys.stderr)
        return None
    # rank 0 tidies and checks (falling back past a damaged newest checkpoint); every rank resumes from its pick
    last = decided_on_rank_zero(lambda: resume_point(checkpoints, fingerprint, adapter))
    progress.say(
        f"resuming from {last}" if last else f"trainer.resume=true but no checkpoint in {checkpoints}; starting fresh"
    )
    return last


def _split_metrics(raw: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Trainer's eval_* dict → (metrics without the prefix, timing numbers)."""
    metrics: dict[str, float] = {}
    timing: dict[str, float] = {}
    for key, value in raw.items():
        if key == "step":
            continue
        name = key.removeprefix("eval_")
        (timing if name in TIMING else metrics)[name] = value
    return metrics, timing


def _final_eval(trainer: Any) -> dict[str, float]:
    """Trainer's evaluation of the parameters the model holds (the last step's, or the best evaluated step's
    after load_best_model_at_end): the one it logged for them if any, else a new one."""
    held = held_evaluation(trainer.state, bool(trainer.args.load_best_model_at_end))
    return dict(held) if held is not None else trainer.evaluate()


def _early_record(cfg: DictConfig, hydra: dict[str, Any], out: Path) -> dict[str, Any]:
    """What is known about a run before its options are checked (for a failed metrics.json): the values as
    written, unresolved, so a bad or secret ``${oc.env:...}`` neither raises here nor reaches the file."""
    raw = OmegaConf.to_container(cfg, resolve=False) if OmegaConf.is_dict(cfg) else {}
    raw = raw if isinstance(raw, dict) else {}

    def name(group: str) -> Any:
        node = raw.get(group)
        return node.get("name") if isinstance(node, dict) else None

    return {
        "task": name("task"),
        "projection": name("projection"),
        "model": name("model"),
        "seed": raw.get("seed"),
        "command": provenance.job_command(sys.argv, hydra.get("overrides", []), bool(hydra.get("multirun"))),
        "argv": list(sys.argv),
        "overrides": hydra.get("overrides", []),
        "output_dir": str(out),
        "lorazoo_version": __version__,
    }


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one job; returns the metrics.json record (also written to ``output_dir``).

    A config, data or model error before training still writes metrics.json (status failed, the reason)
    when the job has a run dir (Hydra's, or ``output_dir``)."""
    progress.start_job()
    adopt_slurm_environment()  # a Slurm job with N tasks: its tasks become ranks before anything reads RANK
    hydra = _hydra_context()
    out = Path(output_dir or hydra.get("output_dir") or os.getcwd()).resolve()
    try:
        with contextlib.ExitStack() as stack:  # holds the run-dir claim (lock) until the job ends
            return _run(cfg, hydra, out, stack)
    except (LoraZooError, OSError) as exc:  # a full disk or unwritable dir too: the record says why, if it can
        if getattr(exc, "_lorazoo_recorded", False) or not (output_dir or hydra) or not is_rank_zero():
            raise
        with contextlib.suppress(OSError):
            write_failure(out, _early_record(cfg, hydra, out), exc, stage="setup", scrub=Redactor.of(cfg))
        raise


def _run(cfg: DictConfig, hydra: dict[str, Any], out: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    config_schema.check(cfg)  # every key typed and bounded before anything reads it
    cfg, applied = apply_task_overrides(cfg, hydra.get("overrides", []))
    cfg, data_from = apply_data_root(cfg)
    resolved = config_schema.check(cfg)  # the values task_overrides and data_root set, too
    shown = recorded(cfg)  # what records hold: ${oc.env:...} as written, never its value
    redact = Redactor(resolved, shown)
    seed = int(cfg.seed)
    projection = from_node(ProjectionOptions, cfg.projection, "projection config")
    model_opts = from_node(ModelOptions, cfg.model, "model config")
    trainer_opts = from_node(TrainerOptions, cfg.trainer, "trainer config")
    optimizer_opts = from_node(OptimizerOptions, cfg.get("optimizer"), "optimizer config")
    out = agree_on_output_dir(out, trainer_opts.ddp_backend)  # every rank: rank 0's run dir

    def own_run_dir() -> run_dir.Claim:  # rank 0 locks, checks and marks the dir; the other ranks get its answer
        requeued = slurm_attempt.is_requeued_attempt(out)  # a later attempt of the same Slurm job continues
        held = stack.enter_context(run_dir.claimed(out, to_plain(cfg), trainer_opts.resume or requeued, shown))
        if held.completed is None:
            for name in held.sweep_scratch():
                print(f"[lorazoo] {out}: removed {name}, left by a write that was killed", file=sys.stderr)
            held.record_identity()
            slurm_attempt.record_attempt(out)
            if requeued:
                print(f"[lorazoo] {out}: requeued attempt of Slurm job {slurm_attempt.current_job()}: resuming")
            if hydra:
                run_dir.save_hydra_files(out, cfg)
        return held

    claim = decided_on_rank_zero(own_run_dir)
    if claim.completed is not None:  # resumable sweeps: this exact config already finished here
        progress.say(
            f"[lorazoo] {out}: this config already completed (fingerprint {claim.fingerprint}); result reused, "
            "nothing trained (delete the dir to retrain)",
            log=False,  # the completed run's files, its cli.log included, stay as they were
        )
        if is_rank_zero():
            progress.report_job(claim.completed, log=False)
        return claim.completed
    logger = RunLogger(from_node(LoggerOptions, cfg.logger, "logger config"))
    get_projection_class(adapter_config(projection, model_opts, seed).projection)  # rank, alpha, name: fail in seconds
    preflight.check_precision(trainer_opts)
    preflight.check_max_length(OmegaConf.select(cfg, "task.max_length", default=128), model_opts)

    data_files = stack.enter_context(recording_reads())  # the data files read from here on: sha256 in metrics.json
    task = build_task(cfg.task, seed)
    if task.task_type != model_opts.task_type:
        raise ConfigError(
            f"task {task.name!r} needs a {task.task_type} model but model={model_opts.name!r} is "
            f"{model_opts.task_type}; pick a matching model= option"
        )
    preflight.check_base_model(model_opts, trainer_opts)  # sizes that make no model, or more than memory holds
    layout = meta_layout(model_opts, projection, task.num_labels)  # shapes only: seconds, no weights
    changes: list[Change] = []
    if layout is not None:
        projection, changes = fit_projection(
            projection, layout, model_opts.name, explicit_keys(hydra.get("overrides", []))
        )
        for change in changes:
            progress.say(change.line(model_opts.name))
        preflight.check_adapter_size(projection, layout, model_opts.name, trainer_opts)  # before any allocation
    preflight.check_batch_memory(trainer_opts, OmegaConf.select(cfg, "task.max_length", default=128), model_opts)
    try:
        task.load()  # data errors surface before a model is loaded
    except DataUnavailableError as exc:  # say which setting the missing path came from
        origin = provenance.data_path_origin(
            cfg, hydra.get("overrides", []), applied, data_from, hydra.get("experiment")
        )
        raise DataUnavailableError(f"{exc}; {origin}") from None
    harness = prepare_lm_eval(eval_options(cfg.get("eval")))  # lm-eval task names and data, checked now too

    if trainer_opts.deterministic:
        from transformers import enable_full_determinism

        enable_full_determinism(seed)
    init_from = trainer_opts.init_adapter
    init_seed = None
    if init_from:  # checked before the model loads: a wrong start adapter costs seconds
        from lorazoo.train.loading.init_adapter import check_compatible, read_init_config

        saved = read_init_config(init_from)
        check_compatible(saved, adapter_config(projection, model_opts, seed), init_from)
        init_seed = saved.seed
    loaded = load_adapted_model(model_opts, projection, seed, task.num_labels, adapter_seed=init_seed)
    if init_from:
        from lorazoo.train.loading.init_adapter import load_projection_weights

        load_projection_weights(loaded.model, init_from)
    train_set, eval_set = task.datasets(loaded.tokenizer)
    check_groups(loaded.model, optimizer_opts)  # a misspelled optimizer.groups key fails before training
    counts = cast("AdaptedModel", loaded.model).num_parameters()
    checkpoints = out / "checkpoints"
    resume_from = _resume_point(
        checkpoints, claim.resume, claim.fingerprint, adapter_config(projection, model_opts, seed).to_dict()
    )
    from lorazoo.train.engine.curves import CurvesCallback
    from lorazoo.train.engine.train_time import TrainTimeCallback
    from lorazoo.train.engine.trainer import (
        LoraZooTrainer,  # transformers' Trainer takes seconds to import: after every input check
    )

    curves = CurvesCallback(out, write=is_rank_zero())  # curves.jsonl; its rows give the whole run's train loss
    best_metric = best_metric_name(trainer_opts, task.metric_keys(), task.prediction_loss_only)
    clock = TrainTimeCallback(
        out,
        prior_train_time(out, resume_from) or 0.0,
        write=is_rank_zero(),
        prior_cpu_s=prior_train_time(out, resume_from, CPU_TIME),
    )
    trainer = LoraZooTrainer(
        model=loaded.model,
        args=training_arguments(
            trainer_opts, checkpoints, seed, logger.report_to(), task.prediction_loss_only, best_metric
        ),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=task.collator(loaded.tokenizer),
        processing_class=loaded.tokenizer,
        compute_metrics=None if task.prediction_loss_only else task.compute_metrics,
        optimizer_options=optimizer_opts,
        callbacks=[clock, curves],
        trainer_options=trainer_opts,
        run_fingerprint=claim.fingerprint,
    )
    check_engine(trainer, trainer_opts)  # the FSDP/DeepSpeed asked for is what Trainer set up (it can fall back to DDP)
    if is_rank_zero():  # the config as used (fitted values), beside Hydra's composed one; written once training is
        # certain to start, so a setup failure leaves the dir as free for a corrected config as before
        provenance.write_config_used(out, cfg, {c.key: c.new for c in changes})
    record: dict[str, Any] = {
        "status": "running",
        "task": task.name,
        "projection": projection.name,
        "model": model_opts.name,
        "seed": seed,
        "command": provenance.job_command(sys.argv, hydra.get("overrides", []), bool(hydra.get("multirun"))),
        "argv": list(sys.argv),
        "overrides": hydra.get("overrides", []),
        "output_dir": str(out),
        "cwd": os.getcwd(),
        "config_used": provenance.CONFIG_USED,
        "lorazoo_version": __version__,
        **provenance.code_record(),
        "data_sha256": provenance.data_checksums(data_files),
        "eval_split": _eval_split(cfg),
        "eval_selection": task.eval_selection(),
        "model_source": loaded.source,
        "parameters": counts,
        "trainable": counts["trainable"],
        "D": counts["D"],
        "task_overrides_applied": applied,
        "world_size": world_size(),
        "data_from": data_from,
        "fitted_to_model": {c.key: {"from": c.old, "to": c.new, "why": c.why} for c in changes},
        "fingerprint": claim.fingerprint,
        **({"attempts": tried} if (tried := slurm_attempt.attempts(out)) else {}),  # Slurm attempts of this job
        **task.summary(),
    }
    logger.start(
        out,
        {**shown, "parameters": counts},
        group=redact(wandb_group(shown.get("name"), hydra.get("experiment"), hydra.get("sweep_dir"))),
        job_type=redact(task.name),
        name=redact(run_name(projection.name, task.name, model_opts.name, seed)),
        resume=resume_from is not None or claim.resume,
    )
    try:
        started, cpu = time.perf_counter(), provenance.CpuClock()
        result = trainer.train(resume_from_checkpoint=resume_from)
        session, session_cpu = time.perf_counter() - started, cpu.elapsed()
        wall = clock.prior_s + session
        # saved before the final evaluation, so a failing metric, generation or lm-eval keeps what was trained
        adapter_dir = cast("AdaptedModel", loaded.model).save_adapter(
            out / "adapter"
        )  # every rank (a sharded θ is gathered); rank 0 writes
        record["adapter_dir"] = str(adapter_dir)
        metrics, timing = _split_metrics(_final_eval(trainer))
        metrics.update(task.derived_metrics(metrics))
        metrics.update(task.final_evaluate(trainer, loaded.model, loaded.tokenizer, out))
        _require_finite(metrics)
        lm_eval = harness.evaluate(loaded.model, loaded.tokenizer, out) if harness and is_rank_zero() else {}
    except BaseException as exc:
        record.update(status="failed", reason=_failure_reason(exc), error=f"{type(exc).__name__}: {exc}")
        if is_rank_zero():
            atomic_write_json(out / "metrics.json", redact(record))
            progress.report_job(record)
            if "adapter_dir" in record:
                print(f"[lorazoo] training finished before the failure: the adapter is at {record['adapter_dir']}")
        logger.finish(exit_code=1)
        exc._lorazoo_recorded = True  # type: ignore[attr-defined]
        exc._lorazoo_failed_stage = "training"  # type: ignore[attr-defined]  # cli: one failed trial of a sweep
        raise
    record.update(
        status="completed",
        artifacts=run_dir.artifact_hashes(out),  # "completed" holds only while these files are as recorded
        **{k: metrics[k] for k in task.metric_keys() if k in metrics},
        metrics=metrics,
        **task.report(),
        **({"lm_eval": lm_eval} if lm_eval else {}),
        eval_timing=timing,
        checkpoints=checkpoint_scores(
            trainer.state, best_metric, bool(trainer.args.greater_is_better), trainer_opts.load_best_model_at_end
        ),
        steps=trainer.state.global_step,
        wall_time_s=round(wall, 3),
        # CPU seconds of training (this process and its finished data-loader workers), every part of a resumed run
        # (cpu_time.json); null when the part resumed from has no CPU record
        cpu_time_s=None if clock.prior_cpu_s is None else round(clock.prior_cpu_s + session_cpu, 3),
        train={
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "wall_time_s": round(wall, 3),
            "this_session_s": round(session, 3),
            "this_session_cpu_s": round(session_cpu, 3),
            **_train_loss(curves, result.training_loss),
            "resumed_from": resume_from,
        },
    )
    if is_rank_zero():
        atomic_write_json(out / "metrics.json", redact(record))
    logger.summary(redact({k: v for k, v in record.items() if isinstance(v, (int, float, str))} | flat_scores(lm_eval)))
    logger.finish()
    if is_rank_zero():
        _print_summary(record, out)
        progress.report_job(record)
    return record


def _train_loss(curves: Any, trainer_loss: float | None) -> dict[str, Any]:
    """The mean training loss over every step of the run, from curves.jsonl (Trainer's covers only its own
    ``train()`` call, and its unlogged tail is rank 0's alone); ``train_loss_steps`` says how many steps it
    averages (fewer only when resumed from a checkpoint written before curves.jsonl existed)."""
    loss, covered = curves.train_loss()
    return {"train_loss": loss if covered else trainer_loss, "train_loss_steps": covered or None}


def _require_finite(metrics: dict[str, Any]) -> None:
    """A NaN/inf metric is no result: the run fails naming it (a constant prediction, a NaN label...)."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise NonFiniteMetricError(
            f"non-finite final metric(s) {bad}; the run is failed, not reported (check the "
            "eval data for NaN labels and the predictions for a constant output)"
        )


def _failure_reason(exc: BaseException) -> str:
    """A short word for metrics.json ``reason`` (compare.py lists failed runs by it)."""
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


def _eval_split(cfg: DictConfig) -> str:
    """What the final scores are measured on: the dev/test data, or a held-in split carved from train."""
    held = OmegaConf.select(cfg, "task.holdout_dev", default=None)
    return f"held-in ({held} examples carved from train, task.holdout_dev)" if held else "dev"


def _print_summary(record: dict[str, Any], out: Path) -> None:
    shown = [
        f"{k}={record[k]:.4f}"
        for k in ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "exact_match", "perplexity")
        if isinstance(record.get(k), float)
    ]
    if "majority_rate" in record:
        shown.append(f"majority_rate={record['majority_rate']:.4f}")
    progress.say(
        f"[lorazoo] {record['task']} / {record['projection']} / {record['model']} (seed {record['seed']}): "
        f"{record.get('eval_split', 'dev')} {' '.join(shown)} | trainable {record['trainable']:,} of D {record['D']:,} | "
        f"{record['steps']} steps in {record['wall_time_s']:.1f} s | {out / 'metrics.json'}",
        file=sys.stdout,
    )
