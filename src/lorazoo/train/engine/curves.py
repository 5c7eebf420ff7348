"""The run's learning curve, ``<run dir>/curves.jsonl``: one JSON row per logged step, no W&B needed.

A training row holds ``step``, ``epoch``, ``loss`` (Trainer's mean over the steps since the previous
log, gathered over every rank), ``lr``, ``grad_norm`` and ``steps`` (how many optimizer steps that mean
covers); an evaluation row holds ``step``, ``epoch`` and Trainer's ``eval_*`` scores. Rows are appended
one ``write`` each (a kill leaves at most a torn last line, which readers skip); a resumed run first drops
the rows after its checkpoint (that work is redone), so the file is continued, never duplicated.

The callback also makes the record complete: it asks Trainer to log at every checkpoint and at the last
step, so the rows cover every step and ``run_train_loss`` is the mean loss of the whole run, across
resumes (Trainer's own ``train_loss`` covers only its ``train()`` call) and across ranks (Trainer's
unlogged tail is rank 0's local loss).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lorazoo.files import atomic_write, current_umask

CURVES_FILE = "curves.jsonl"
_EVAL_TIMING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a curves file ([] when absent); a torn or foreign line is skipped, not fatal."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed write
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, allow_nan=True) + "\n"


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One row in one ``write`` (O_APPEND; a symlink planted at ``path`` is refused, never followed)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666 & ~current_umask())
    try:
        os.write(fd, _line(row).encode())
    finally:
        os.close(fd)


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text("".join(_line(r) for r in rows))

    atomic_write(path, write)


def training_row(step: int, epoch: float | None, logs: dict[str, Any], covered: int) -> dict[str, Any]:
    return {
        "step": step,
        "epoch": epoch,
        "loss": logs["loss"],
        "lr": logs.get("learning_rate"),
        "grad_norm": logs.get("grad_norm"),
        "steps": covered,
    }


def eval_row(step: int, epoch: float | None, logs: dict[str, Any]) -> dict[str, Any] | None:
    scores = {k: v for k, v in logs.items() if k.startswith("eval_") and k not in _EVAL_TIMING}
    return {"step": step, "epoch": epoch, **scores} if scores else None


def run_train_loss(rows: list[dict[str, Any]]) -> tuple[float | None, int]:
    """(mean training loss over the steps the rows cover, how many steps that is)."""
    train = [r for r in rows if "loss" in r and isinstance(r.get("steps"), int)]
    covered = sum(r["steps"] for r in train)
    if not covered:
        return None, 0
    total = math.fsum(float(r["loss"]) * r["steps"] for r in train)
    return total / covered, covered


class CurvesCallback(TrainerCallback):
    """Writes curves.jsonl (rank 0) and keeps its rows in memory on every rank (for the whole-run loss)."""

    def __init__(self, out: Path, write: bool = True):
        self.path = Path(out) / CURVES_FILE
        self.write = write
        self.rows = read_rows(self.path)  # a final checkpoint that skips train() still knows its curve
        self.last_logged = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        kept = [r for r in self.rows if r["step"] <= state.global_step]  # fresh: none; resumed: up to its checkpoint
        if self.write and (kept != self.rows or (self.path.exists() and not kept)):
            write_rows(self.path, kept)
        self.rows = kept
        self.last_logged = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # a checkpoint and the last step end a logged span: what resumes from a checkpoint, and what the ranks
        # computed after the last regular log, are then in the rows (Trainer gathers a logged loss over ranks)
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if control.should_save:  # an epoch-end checkpoint (saves following eval_strategy=epoch)
            control.should_log = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = logs or {}
        if "loss" in logs:
            row: dict[str, Any] | None = training_row(
                state.global_step, state.epoch, logs, state.global_step - self.last_logged
            )
            self.last_logged = state.global_step
        else:
            row = eval_row(state.global_step, state.epoch, logs)
        if row is not None:
            self._add(row)

    def _add(self, row: dict[str, Any]) -> None:
        repeat = "loss" not in row and any("loss" not in r and r["step"] == row["step"] for r in self.rows)
        if repeat:  # the same step evaluated again (a finished run re-entered): replaced, not duplicated
            self.rows = [r for r in self.rows if "loss" in r or r["step"] != row["step"]]
        self.rows.append(row)
        if self.write:
            write_rows(self.path, self.rows) if repeat else append_row(self.path, row)

    def train_loss(self) -> tuple[float | None, int]:
        return run_train_loss(self.rows)
