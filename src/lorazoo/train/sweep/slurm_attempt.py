"""Which Slurm attempt this is: a requeued attempt of the same job continues its run; nothing else does.

Slurm keeps a job's id when it requeues it (pre-emption handled by submitit, ``scontrol requeue``, a timeout
submitit requeues) and counts the restarts in ``SLURM_RESTART_COUNT``. Each attempt that owns a run dir
appends ``{job, restart_count, started}`` to ``<run dir>/slurm_attempts.json``; an attempt resumes on its
own only when the last entry is the same job with a lower restart count. A user's new launch (a new job id,
or a second launch inside one allocation, which has the same count) is never turned into a resume.
Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write_json

ATTEMPTS_FILE = "slurm_attempts.json"


def current_job() -> str | None:
    """This process's Slurm job as sacct names it (``<array job>_<task>`` for an array task), or None."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    """How often Slurm has requeued this job (0 on its first attempt, where the variable is unset)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def attempts(directory: Path) -> list[dict[str, Any]]:
    """The attempts recorded in ``directory`` (oldest first); [] when none or unreadable."""
    try:
        record = json.loads((directory / ATTEMPTS_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return []
    entries = record.get("attempts") if isinstance(record, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def is_requeued_attempt(directory: Path) -> bool:
    """True when this process is a later attempt of the Slurm job that last worked in ``directory``."""
    job = current_job()
    previous = attempts(directory)
    if job is None or not previous:
        return False
    last = previous[-1]
    count = last.get("restart_count")
    return last.get("job") == job and isinstance(count, int) and count < restart_count()


def record_attempt(directory: Path) -> list[dict[str, Any]]:
    """Append this attempt (when running under Slurm) and return every attempt recorded so far."""
    job = current_job()
    entries = attempts(directory)
    if job is None:
        return entries
    entries.append({"job": job, "restart_count": restart_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_json(directory / ATTEMPTS_FILE, {"attempts": entries})
    return entries
