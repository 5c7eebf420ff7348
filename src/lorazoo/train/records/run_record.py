"""metrics.json records beyond the happy path: a failed run states its reason, and train time adds up
across resumes.

A run that stops on a config or data error before training still leaves ``metrics.json`` (status
``failed`` and the one-line reason) so ``scripts/compare.py`` can say why; a record an earlier run left
in the same dir is never overwritten (except an earlier setup failure's). Train time is kept per checkpoint in
``<run dir>/train_time.json`` ({step: seconds trained so far}; CPU seconds in ``cpu_time.json``), so a resumed
run reports the time of the part it continued from plus its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write_json

TRAIN_TIME = "train_time.json"
CPU_TIME = "cpu_time.json"  # {step: CPU seconds of training so far}, the same way as TRAIN_TIME


def recorded_score(record: Mapping[str, Any], name: str) -> Any:
    """Score ``name`` of a run record: at the top level, where metrics.json copies the task's scores, else under
    ``metrics`` (the evaluation loss is only there)."""
    return record[name] if name in record else (record.get("metrics") or {}).get(name)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_failure(
    out: Path, record: dict[str, Any], exc: BaseException, stage: str, scrub: Callable[[Any], Any] = lambda r: r
) -> bool:
    """Write a failed record with the reason. A dir that already holds a record is left alone (it may be
    another run's), unless that record is itself an earlier setup failure (no trained result to keep).
    ``scrub`` hides what the record must not hold (an ``${oc.env:...}`` value inside the message)."""
    path = out / "metrics.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not (isinstance(old, dict) and old.get("status") == "failed" and old.get("failed_stage") == "setup"):
            return False
    atomic_write_json(path, scrub({**record, "status": "failed", "failed_stage": stage, "error": one_line(exc)}))
    return True


def read_times(out: Path, name: str = TRAIN_TIME) -> dict[str, float]:
    try:
        data = json.loads((out / name).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def prior_train_time(out: Path, resume_from: str | None, name: str = TRAIN_TIME) -> float | None:
    """Seconds trained before the checkpoint this run resumes from (0 for a fresh run; None when the checkpoint
    has no entry, e.g. a CPU time from before lorazoo recorded it)."""
    if not resume_from:
        return 0.0
    step = Path(resume_from).name.rsplit("-", 1)[-1]
    return read_times(out, name).get(step)
