"""Progress, quietly: one line per finished sweep job, ``[3/12] lora s1 glue/sst2 accuracy=0.8100 (1m12s)``,
and the run's own lines copied into Hydra's job log (``<run dir>/cli.log``), which otherwise holds none.

The job's place comes from Hydra: ``hydra.job.num`` and the sweep's size, which is the Optuna sweeper's
``n_trials`` or the product of the discrete sweeps in the multirun's own overrides (``multirun.yaml`` in the
sweep dir, written by Hydra before any job starts, so any launcher's job can read it).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lorazoo.train.records.run_record import recorded_score

_job_started = time.perf_counter()


def start_job() -> None:
    """The job's clock (a basic-launcher sweep runs every job in one process)."""
    global _job_started
    _job_started = time.perf_counter()


def say(line: str, file: Any = None, log: bool = True) -> None:
    """Print ``line`` (stderr by default) and copy it into the job's log file (Hydra's cli.log), if any;
    ``log=False`` for a finished run's dir that must stay byte-identical (a relaunched sweep reusing it)."""
    print(line, file=file or sys.stderr, flush=True)
    if not log:
        return
    record = logging.LogRecord("lorazoo", logging.INFO, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def sweep_size(overrides: list[str], n_trials: Any = None) -> int | None:
    """How many jobs a multirun has: ``n_trials`` (Optuna), else the product of its discrete sweeps."""
    if isinstance(n_trials, int) and not isinstance(n_trials, bool):
        return n_trials
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # an override Hydra itself accepted but this parser version does not: size unknown
        return None
    sizes = [len(list(o.sweep_iterator())) for o in parsed if o.is_sweep_override() and o.is_discrete_sweep()]
    if any(o.is_sweep_override() and not o.is_discrete_sweep() for o in parsed):
        return None
    return math.prod(sizes)


def sweep_position() -> tuple[int, int | None] | None:
    """(k, n) of this multirun job, 1-based (n None when unknown); None outside a multirun."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN" or hc.job.num is None:
        return None
    saved = Path(str(hc.sweep.dir)) / "multirun.yaml"
    overrides: list[str] = []
    if saved.is_file():
        node = OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=None)
        overrides = [str(o) for o in node] if node is not None else []
    n_trials = OmegaConf.select(OmegaConf.create({"s": hc.sweeper}), "s.n_trials", default=None)
    return int(hc.job.num) + 1, sweep_size(overrides, n_trials) if overrides or n_trials else None


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def job_line(record: dict[str, Any], position: tuple[int, int | None]) -> str:
    """``[k/n] <projection> s<seed> <task> <headline metric>=<value> (<job time>)``; a failed job says why."""
    k, n = position
    head = f"[{k}/{n}]" if n else f"[{k}]"
    what = f"{record.get('projection')} s{record.get('seed')} {record.get('task')}"
    if record.get("status") == "completed":
        name = record.get("main_metric")  # the task's declaration (Task.metric_meaning), written in the record
        value = recorded_score(record, name) if isinstance(name, str) else None
        if not isinstance(value, (int, float)):
            name, value = "loss", recorded_score(record, "loss")
        result = f"{name}={value if isinstance(value, (int, float)) else float('nan'):.4f}"
        if str(record.get("eval_split", "dev")).startswith("held-in"):
            result = f"held-in {result}"  # a search trial's score is not a dev score
    else:
        result = f"failed: {record.get('reason') or record.get('error') or record.get('status')}"
    return f"{head} {what} {result} ({duration(time.perf_counter() - _job_started)})"


def report_job(record: dict[str, Any], log: bool = True) -> None:
    """The sweep's progress line for this finished job (nothing outside a multirun)."""
    position = sweep_position()
    if position is not None:
        say(job_line(record, position), file=sys.stdout, log=log)
