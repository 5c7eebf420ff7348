"""Stage 4: the base model with its adapter, and the Trainer that will train it (resuming where asked)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from lorazoo.train.engine.best import best_greater_is_better, best_metric_name
from lorazoo.train.engine.distributed import (
    check_data_parallel,
    check_engine,
    decided_on_rank_zero,
    is_rank_zero,
    scale_arguments,
)
from lorazoo.train.engine.optimizer import check_groups
from lorazoo.train.loading.base_model import LoadedModel, load_adapted_model
from lorazoo.train.options import TrainerOptions
from lorazoo.train.records import progress
from lorazoo.train.records.checkpoints import foreign_checkpoints, resume_point
from lorazoo.train.records.run_dir import Claim
from lorazoo.train.records.run_record import CPU_TIME, prior_train_time
from lorazoo.train.stages.plan import Plan
from lorazoo.train.stages.setup import RunSetup

if TYPE_CHECKING:
    from lorazoo.model import AdaptedModel
    from lorazoo.train.engine.curves import CurvesCallback
    from lorazoo.train.engine.train_time import TrainTimeCallback


@dataclass(frozen=True)
class Built:
    """A Trainer ready to train, with what the record needs from its making."""

    loaded: LoadedModel
    trainer: Any  # LoraZooTrainer
    counts: dict[str, Any]  # AdaptedModel.num_parameters()
    resume_from: str | None  # the checkpoint training continues from
    best_metric: str  # the score Trainer tracks the best evaluated step by (engine/best.py)
    clock: TrainTimeCallback  # train_time.json: the whole run's training seconds
    curves: CurvesCallback  # curves.jsonl; its rows give the whole run's train loss


def load_model(setup: RunSetup, plan: Plan) -> LoadedModel:
    """Base + adapter; from ``trainer.init_adapter``'s θ (and seed) when given, checked before the model loads."""
    if setup.trainer.deterministic:
        from transformers import enable_full_determinism

        enable_full_determinism(setup.seed)
    init_from = setup.trainer.init_adapter
    init_seed = None
    if init_from:  # a wrong start adapter costs seconds
        from lorazoo.train.loading.init_adapter import check_compatible, read_init_config

        saved = read_init_config(init_from)
        check_compatible(saved, plan.adapter, init_from)
        init_seed = saved.seed
    loaded = load_adapted_model(setup.model, plan.projection, setup.seed, plan.task.num_labels, adapter_seed=init_seed)
    if init_from:
        from lorazoo.train.loading.init_adapter import load_projection_weights

        load_projection_weights(loaded.model, init_from)
    return loaded


def build_trainer(
    setup: RunSetup, plan: Plan, loaded: LoadedModel, claim: Claim, out: Path, report_to: list[str]
) -> Built:
    """The Trainer over the task's data, with lorazoo's optimizer spec, checkpoints and callbacks."""
    task, trainer_opts = plan.task, setup.trainer
    train_set, eval_set = task.datasets(loaded.tokenizer)
    check_groups(loaded.model, setup.optimizer)  # a misspelled optimizer.groups key fails before training
    counts = cast("AdaptedModel", loaded.model).num_parameters()
    checkpoints = out / "checkpoints"
    resume_from = resume_checkpoint(checkpoints, claim.resume, claim.fingerprint, plan.adapter.to_dict())
    from lorazoo.train.engine.curves import CurvesCallback
    from lorazoo.train.engine.train_time import TrainTimeCallback
    from lorazoo.train.engine.trainer import (
        LoraZooTrainer,  # transformers' Trainer takes seconds to import: after every input check
    )

    curves = CurvesCallback(out, write=is_rank_zero())
    best_metric = best_metric_name(trainer_opts, task.metric_keys(), task.prediction_loss_only)
    greater_is_better = best_greater_is_better(trainer_opts, best_metric, task.metric_meaning())
    clock = TrainTimeCallback(
        out,
        prior_train_time(out, resume_from) or 0.0,
        write=is_rank_zero(),
        prior_cpu_s=prior_train_time(out, resume_from, CPU_TIME),
    )
    trainer = LoraZooTrainer(
        model=loaded.model,
        args=training_arguments(
            trainer_opts, checkpoints, setup.seed, report_to, task.prediction_loss_only, best_metric, greater_is_better
        ),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=task.collator(loaded.tokenizer),
        processing_class=loaded.tokenizer,
        compute_metrics=None if task.prediction_loss_only else task.compute_metrics,
        optimizer_options=setup.optimizer,
        callbacks=[clock, curves],
        trainer_options=trainer_opts,
        run_fingerprint=claim.fingerprint,
    )
    check_engine(trainer, trainer_opts)  # the FSDP/DeepSpeed asked for is what Trainer set up (it can fall back to DDP)
    return Built(loaded, trainer, counts, resume_from, best_metric, clock, curves)


def resume_checkpoint(
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


def training_arguments(
    t: TrainerOptions,
    out: Path,
    seed: int,
    report_to: list[str],
    loss_only: bool,
    best_metric: str | None = None,
    greater_is_better: bool | None = None,
) -> Any:
    """The loop's settings. No lr, decay, betas or eps here: those reach the optimizer only through
    configs/optimizer/ and build_optimizer (LoraZooTrainer.create_optimizer). ``best_metric``: the score
    Trainer tracks the best evaluated step by, ``greater_is_better`` its direction as the task declares it
    (engine/best.py); None leaves Trainer's name rule."""
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
        greater_is_better=t.greater_is_better if greater_is_better is None else greater_is_better,
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
