"""How one attempt of a sweep job ended, and the one-line summary of a sweep's failed jobs.

A job process records its failure here (cli.hydra_main calls ``note_failure``); the Slurm launcher
(train/slurm_launcher.py) turns it into ``<submitit folder>/<job>_lorazoo_outcome.json``, rewritten by every
attempt, which the sweep process reads once the job is over. So success or failure is always this attempt's,
never a metrics.json an earlier attempt left.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lorazoo.errors import LoraZooError
from lorazoo.files import atomic_write_json

_noted: list[tuple[BaseException, str]] = []  # (the failure, its job dir)


def failed_stage(exc: BaseException) -> str:
    """``training`` when the runner recorded the failure after training started, else ``setup``."""
    return "training" if getattr(exc, "_lorazoo_failed_stage", None) == "training" else "setup"


def one_line(exc: BaseException) -> str:
    """A LoraZooError's message, or ``<type>: <message>`` for anything else, on one line."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, LoraZooError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def note_failure(exc: BaseException) -> None:
    """Called by the job's task function, where Hydra still knows the job dir (it forgets it afterwards)."""
    _noted[:] = [(exc, job_dir())]


def take_noted() -> tuple[BaseException, str] | None:
    """The failure this process noted since the last call, with its job dir (None when the job did not fail)."""
    return _noted.pop() if _noted else None


def job_dir() -> str:
    """The running Hydra job's output dir; empty outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.output_dir or "")


@dataclass
class Outcome:
    """One attempt's end: ``completed``, or ``failed`` with the stage, the one-line reason and the run dir."""

    status: str
    stage: str = ""
    line: str = ""
    run_dir: str = ""

    def write(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> Outcome | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: str(data.get(k, "")) for k in ("status", "stage", "line", "run_dir")})
        except (OSError, ValueError, AttributeError):
            return None


def summary(total: int, failed: dict[int, Outcome]) -> str:
    """``3/4 completed; job 1 failed at setup: <reason>; <run dir>`` (one clause per failed job)."""
    parts = [f"{total - len(failed)}/{total} completed"]
    for num, outcome in sorted(failed.items()):
        parts.append(f"job {num} failed at {outcome.stage}: {outcome.line}; {outcome.run_dir}")
    return "; ".join(parts)
