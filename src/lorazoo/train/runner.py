"""One training job from a composed config, stage by stage (train/stages/): the config parsed once into typed
options → the run dir claimed → inputs checked, task and data loaded → model + adapter and Trainer built →
trained and evaluated → metrics.json (+ adapter/)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lorazoo.errors import LoraZooError
from lorazoo.train.engine.distributed import adopt_slurm_environment, agree_on_output_dir, is_rank_zero
from lorazoo.train.engine.tracking import RunLogger
from lorazoo.train.records import progress, provenance
from lorazoo.train.records.naming import register_resolvers
from lorazoo.train.records.recorded import Redactor
from lorazoo.train.records.run_record import write_failure
from lorazoo.train.stages.build import build_trainer, load_model
from lorazoo.train.stages.claim import claim_run_dir, reuse_completed
from lorazoo.train.stages.plan import make_plan
from lorazoo.train.stages.record import completed, early_record, failed, publish, running_record
from lorazoo.train.stages.setup import hydra_context, parse
from lorazoo.train.stages.training import start_tracking, train_and_evaluate

register_resolvers()


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one job; returns the metrics.json record (also written to ``output_dir``).

    A config, data or model error before training still writes metrics.json (status failed, the reason)
    when the job has a run dir (Hydra's, or ``output_dir``)."""
    progress.start_job()
    adopt_slurm_environment()  # a Slurm job with N tasks: its tasks become ranks before anything reads RANK
    hydra = hydra_context()
    out = Path(output_dir or hydra.get("output_dir") or os.getcwd()).resolve()
    try:
        with contextlib.ExitStack() as stack:  # holds the run-dir claim (lock) until the job ends
            return _run(cfg, hydra, out, stack)
    except (LoraZooError, OSError) as exc:  # a full disk or unwritable dir too: the record says why, if it can
        if getattr(exc, "_lorazoo_recorded", False) or not (output_dir or hydra) or not is_rank_zero():
            raise
        with contextlib.suppress(OSError):
            write_failure(out, early_record(cfg, hydra, out), exc, stage="setup", scrub=Redactor.of(cfg))
        raise


def _run(cfg: DictConfig, hydra: dict[str, Any], out: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    setup = parse(cfg, hydra)
    out = agree_on_output_dir(out, setup.trainer.ddp_backend)  # every rank: rank 0's run dir
    claim = claim_run_dir(setup, out, stack)
    if claim.completed is not None:  # resumable sweeps: this exact config already finished here
        return reuse_completed(claim, out)
    logger = RunLogger(setup.logger)
    plan = make_plan(setup, stack)
    built = build_trainer(setup, plan, load_model(setup, plan), claim, out, logger.report_to())
    if is_rank_zero():  # the config as used (fitted values), beside Hydra's composed one; written once training is
        # certain to start, so a setup failure leaves the dir as free for a corrected config as before
        provenance.write_config_used(out, setup.cfg, plan.fitted)
    record = running_record(setup, plan, built, claim, out)
    start_tracking(logger, setup, plan, built, claim, out)
    try:
        outcome = train_and_evaluate(plan, built, record, out)
    except BaseException as exc:
        failed(record, exc, setup.redact, logger, out)
        raise
    completed(record, setup, plan, built, outcome, out)
    publish(record, setup.redact, logger, out)
    return record
