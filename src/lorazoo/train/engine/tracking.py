"""Weights & Biases, offline by default, one run per job, rank 0 only. ``logger=none`` turns it off."""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any, Literal, cast

from lorazoo.files import atomic_write
from lorazoo.train.engine.distributed import is_rank_zero
from lorazoo.train.options import LoggerOptions

RUN_ID_FILE = "wandb_run_id"  # in the run dir: the W&B run a resume continues
FLUSH_S = 2.0  # wandb's default is 15 s


class RunLogger:
    """Start/finish one W&B run around a training job; Trainer's WandbCallback logs into it."""

    def __init__(self, options: LoggerOptions):
        self.options = options
        self.run: Any = None

    @property
    def active(self) -> bool:
        return self.options.name == "wandb" and is_rank_zero()

    def report_to(self) -> list[str]:
        return ["wandb"] if self.active else []

    def start(
        self,
        output_dir: Path,
        config: dict[str, Any],
        group: str | None,
        job_type: str,
        name: str,
        resume: bool = False,
    ) -> None:
        """One W&B run per run dir: ``trainer.resume=true`` continues the W&B run whose id the dir stores."""
        if not self.active:
            return
        import wandb

        opts = self.options
        mode = os.environ.get("WANDB_MODE") or opts.mode
        os.environ.setdefault("WANDB_LOG_MODEL", "checkpoint" if opts.log_model else "false")
        os.environ.setdefault("WANDB_WATCH", "false")
        if wandb.run is not None:  # a previous job of this process (basic launcher multirun)
            wandb.finish()
        id_file = Path(output_dir) / RUN_ID_FILE
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else ""
        if not run_id:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))

            def write_id(tmp: str) -> None:
                Path(tmp).write_text(run_id + "\n")

            atomic_write(id_file, write_id)
        # the .wandb file is flushed every FLUSH_S seconds, so a kill -9 loses at most that much history
        # silent unless logger.verbose=true: W&B's own "wandb: ..." lines (165 in a 5-run sweep) bury the run's
        settings = wandb.Settings(
            x_transaction_log_flush_interval=FLUSH_S, silent=not opts.verbose, quiet=not opts.verbose
        )
        self.run = wandb.init(
            project=opts.project,
            entity=opts.entity,
            group=opts.group or group,
            job_type=job_type,
            name=name,
            tags=list(opts.tags),
            config=config,
            dir=str(output_dir),
            mode=cast(Literal["online", "offline", "disabled", "shared"], mode),
            id=run_id,
            resume="allow" if resume else None,
            settings=settings,
        )

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for key, value in values.items():
                self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
