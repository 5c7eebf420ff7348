"""hydra-submitit-launcher's SlurmLauncher with lorazoo's job contract (configs/hydra/launcher/submitit_slurm.yaml).

What it adds to the plugin (1.2; ``launch`` repeats the plugin's executor set-up, the rest calls it):
- Each job records the user's command line (``sys.argv`` of the sweep process), not submitit's ``_submit.py``.
- Slurm job names say what runs: ``lorazoo:<projection>-<task>-s<seed>`` (jobs sharing a name share one array,
  so ``array_parallelism`` still throttles an lr search).
- Ranks > 0 of a multi-task job write Hydra's log beside submitit's per-rank files, not into rank 0's log.
- Every attempt writes its own outcome (train/sweep_outcome.py); a failed job is one clause of a one-line
  summary (``3/4 completed; job 1 failed at setup: <reason>; <run dir>``) instead of submitit's traceback.
  A basic sweep then exits 2; an Optuna sweep records a training failure as a failed trial and goes on, and
  stops (exit 2) on a setup failure, which every trial would hit.
Pre-emption and requeue are submitit's: the plugin's ``checkpoint`` resubmits the same job, and the requeued
attempt resumes its run dir by itself (train/slurm_attempt.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import DictConfig, OmegaConf, open_dict

from lorazoo.errors import LoraZooError
from lorazoo.train.records.naming import slug
from lorazoo.train.sweep.outcome import Outcome, failed_stage, one_line, summary, take_noted

log = logging.getLogger(__name__)


class JobFailedError(LoraZooError, RuntimeError):
    """A sweep job's attempt failed (the message is its one-line reason); the sweep summary names it."""


def outcome_path(folder: str | Path, job_id: str) -> Path:
    """Where an attempt of job ``job_id`` leaves its outcome: beside submitit's own files for that job."""
    return Path(folder) / f"{job_id}_lorazoo_outcome.json"


def job_name(cfg: DictConfig) -> str:
    """``lorazoo:<projection>-<task>-s<seed>`` from a job's composed config."""
    projection = OmegaConf.select(cfg, "projection.name", default="run")
    task = OmegaConf.select(cfg, "task.name", default="task")
    return f"lorazoo:{slug(str(projection))}-{slug(str(task))}-s{OmegaConf.select(cfg, 'seed', default=0)}"


def _rank_log(cfg: DictConfig, rank: int, folder: str | Path, job_id: str) -> None:
    """Rank N > 0 writes Hydra's log beside submitit's per-rank files (``<job>_<N>_hydra.log``): ranks of one
    job share the job dir, which holds rank 0's log only (a second log there would not be this run's output)."""
    node = OmegaConf.select(cfg, "hydra.job_logging.handlers.file", default=None)
    if rank > 0 and isinstance(node, DictConfig) and "filename" in node:
        with open_dict(cfg):
            node.filename = str(Path(folder) / f"{job_id}_{rank}_hydra.log")


class SlurmLauncher(plugin.SlurmLauncher):
    """The plugin's Slurm launcher plus lorazoo's names, provenance, per-rank logs and per-attempt outcomes."""

    user_argv: list[str] | None = None

    # ------------------------------------------------------------------ in the Slurm job (every attempt)
    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        import submitit

        env = submitit.JobEnvironment()
        rank0 = env.global_rank == 0
        outcome = outcome_path(env.paths.folder, env.job_id)
        if rank0:
            outcome.unlink(missing_ok=True)  # whatever an earlier attempt left is not this attempt's outcome
        if self.user_argv:
            sys.argv = list(self.user_argv)  # the recorded command is the user's, plus this job's overrides
        take_noted()
        try:
            ret = self._run(sweep_overrides, job_dir_key, job_num, singleton_state, env)
        except SystemExit:  # lorazoo's one-line exit (noted), or submitit's exit after a requeue (not noted)
            self._record_failure(outcome, rank0)
            raise
        except Exception as exc:  # the job's config did not load, say
            self._record_failure(outcome, rank0, (exc, ""))
            raise
        if ret.status == JobStatus.FAILED:  # an exception Hydra caught: not one of lorazoo's
            take_noted()
            error = ret._return_value if isinstance(ret._return_value, BaseException) else RuntimeError("failed")
            where = (
                str(OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default="")) if ret.hydra_cfg else ""
            )
            self._record_failure(outcome, rank0, (error, where))
            raise error
        failure = self._record_failure(outcome, rank0)  # a training failure returns None to the sweeper
        if failure is not None:
            raise JobFailedError(one_line(failure))
        return ret

    def _run(
        self, overrides: list[str], job_dir_key: str, job_num: int, state: dict[type, Singleton], env: Any
    ) -> JobReturn:
        """What the plugin's ``__call__`` does, plus the per-rank log file."""
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(state)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.id = env.job_id
            cfg.hydra.job.num = job_num
        _rank_log(cfg, env.global_rank, env.paths.folder, env.job_id)
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )

    @staticmethod
    def _record_failure(
        path: Path, rank0: bool, noted: tuple[BaseException, str] | None = None
    ) -> BaseException | None:
        """Write this attempt's failed outcome (rank 0); the failure noted by the task function by default."""
        noted = noted or take_noted()
        if noted is None:
            return None
        error, where = noted
        if rank0:
            Outcome("failed", failed_stage(error), one_line(error), where).write(path)
        return error

    # ------------------------------------------------------------------ in the sweep process
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and self.hydra_context is not None
        self.user_argv = list(sys.argv)
        executor = self._executor(submitit)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        numbered = [(initial_job_idx + i, list(overrides)) for i, overrides in enumerate(job_overrides)]
        groups: dict[str, list[tuple[int, list[str]]]] = {}
        for num, overrides in numbered:
            log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
            groups.setdefault(self._name(overrides), []).append((num, overrides))
        jobs: dict[int, Any] = {}
        for name, group in groups.items():
            executor.update_parameters(name=name)
            params = [(o, "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state()) for n, o in group]
            jobs.update(zip([n for n, _ in group], executor.map_array(self, *zip(*params))))
        returns: list[JobReturn] = []
        failed: dict[int, Outcome] = {}
        for num, overrides in numbered:
            ret, outcome = _collect(jobs[num], overrides, submitit)
            returns.append(ret)
            if outcome is not None:
                failed[num] = outcome
        if failed:
            line = summary(len(numbered), failed)
            if self._stops_on(failed):
                print(f"error: {line}", file=sys.stderr)
                raise SystemExit(2)
            print(f"[lorazoo] {line}", file=sys.stderr)
        return returns

    def _executor(self, submitit: Any) -> Any:
        """The AutoExecutor the plugin's ``launch`` builds from this launcher's parameters."""
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster="slurm",
            folder=self.params["submitit_folder"],
            slurm_max_num_timeout=self.params["max_num_timeout"],
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"slurm_{k}": v for k, v in self.params.items() if k not in init_keys}
        )
        return executor

    def _name(self, overrides: list[str]) -> str:
        assert self.hydra_context is not None and self.config is not None
        try:
            return job_name(self.hydra_context.config_loader.load_sweep_config(self.config, overrides))
        except Exception:  # a job whose config does not compose fails in its own job, with its own message
            return f"lorazoo:{self.config.hydra.job.name}"

    def _stops_on(self, failed: dict[int, Outcome]) -> bool:
        """Optuna goes on past failed trials; everything else (and a setup failure anywhere) ends the sweep."""
        assert self.config is not None
        optuna = "optuna" in str(OmegaConf.select(self.config, "hydra.sweeper._target_", default="")).lower()
        return not optuna or any(o.stage != "training" for o in failed.values())


def _collect(job: Any, overrides: list[str], submitit: Any) -> tuple[JobReturn, Outcome | None]:
    """The job's JobReturn and, when it failed, its last attempt's outcome (or what Slurm says ended it)."""
    try:
        ret = job.results()[0]
    except submitit.core.utils.UncompletedJobError:
        outcome = Outcome.read(outcome_path(job.paths.folder, job.job_id))
        if outcome is None or outcome.status != "failed":  # killed before it could say (cancelled, out of memory)
            reason = f"Slurm job {job.job_id} ended without a result (state {job.state}; log {job.paths.stderr})"
            outcome = Outcome("failed", "slurm", reason, "")
        failed = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=JobFailedError(outcome.line))
        return failed, outcome
    return ret, None
