"""Stage 2: the run dir made this run's (rank 0 locks, checks and marks it; the other ranks get its answer)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from lorazoo.train.engine.distributed import decided_on_rank_zero, is_rank_zero
from lorazoo.train.records import progress, run_dir
from lorazoo.train.stages.setup import RunSetup
from lorazoo.train.sweep import slurm_attempt


def claim_run_dir(setup: RunSetup, out: Path, stack: contextlib.ExitStack) -> run_dir.Claim:
    """The claim every rank acts on; the lock is held by ``stack`` until the job ends."""
    return decided_on_rank_zero(lambda: _own(setup, out, stack))


def _own(setup: RunSetup, out: Path, stack: contextlib.ExitStack) -> run_dir.Claim:
    requeued = slurm_attempt.is_requeued_attempt(out)  # a later attempt of the same Slurm job continues
    held = stack.enter_context(run_dir.claimed(out, setup.plain, setup.trainer.resume or requeued, setup.shown))
    if held.completed is None:
        for name in held.sweep_scratch():
            print(f"[lorazoo] {out}: removed {name}, left by a write that was killed", file=sys.stderr)
        held.record_identity()
        slurm_attempt.record_attempt(out)
        if requeued:
            print(f"[lorazoo] {out}: requeued attempt of Slurm job {slurm_attempt.current_job()}: resuming")
        if setup.hydra:
            run_dir.save_hydra_files(out, setup.cfg)
    return held


def reuse_completed(claim: run_dir.Claim, out: Path) -> dict[str, Any]:
    """Resumable sweeps: this exact config already finished in ``out``; its record is the result."""
    progress.say(
        f"[lorazoo] {out}: this config already completed (fingerprint {claim.fingerprint}); result reused, "
        "nothing trained (delete the dir to retrain)",
        log=False,  # the completed run's files, its cli.log included, stay as they were
    )
    if is_rank_zero():
        progress.report_job(claim.completed or {}, log=False)
    return claim.completed or {}
