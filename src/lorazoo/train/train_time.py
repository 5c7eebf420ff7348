"""Train time that adds up across resumes: a Trainer callback recording seconds trained at every save.

``<run dir>/train_time.json`` maps a checkpoint's step to the seconds trained up to it; a resumed run
starts from the entry of its checkpoint (``run_record.prior_train_time``), so ``wall_time_s`` in
metrics.json is the total of every part that led to the final adapter (work lost after the last
checkpoint of a killed run is not counted: it was redone).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..io import atomic_write_json
from .run_record import TRAIN_TIME, read_times


class TrainTimeCallback(TrainerCallback):
    """Total train time: seconds before the resume point + this process's time; recorded at each save."""

    def __init__(self, out: Path, prior_s: float = 0.0, write: bool = True):
        self.out, self.prior_s, self.write = out, prior_s, write
        self.started: float | None = None

    def total(self) -> float:
        return self.prior_s + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.write:
            times = read_times(self.out)
            times[str(state.global_step)] = round(self.total(), 3)
            atomic_write_json(self.out / TRAIN_TIME, times)
