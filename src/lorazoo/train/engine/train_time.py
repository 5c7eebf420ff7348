"""Train time that adds up across resumes: a Trainer callback recording seconds trained at every save.

``<run dir>/train_time.json`` maps a checkpoint's step to the seconds trained up to it; a resumed run
starts from the entry of its checkpoint (``run_record.prior_train_time``), so ``wall_time_s`` in
metrics.json is the total of every part that led to the final adapter, and ``cpu_time_s`` likewise from
``cpu_time.json`` (work lost after the last checkpoint of a killed run is not counted: it was redone).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lorazoo.files import atomic_write_json
from lorazoo.train.records.provenance import CpuClock
from lorazoo.train.records.run_record import CPU_TIME, TRAIN_TIME, read_times


class TrainTimeCallback(TrainerCallback):
    """Total train time, wall and CPU: seconds before the resume point + this process's; recorded at each save.
    ``prior_cpu_s`` None: the part resumed from has no CPU record, so none is written from here on."""

    def __init__(self, out: Path, prior_s: float = 0.0, write: bool = True, prior_cpu_s: float | None = 0.0):
        self.out, self.prior_s, self.write, self.prior_cpu_s = out, prior_s, write, prior_cpu_s
        self.started: float | None = None
        self.cpu: CpuClock | None = None

    def total(self) -> float:
        return self.prior_s + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def total_cpu(self) -> float | None:
        if self.prior_cpu_s is None:
            return None
        return self.prior_cpu_s + (self.cpu.elapsed() if self.cpu is not None else 0.0)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()
        self.cpu = CpuClock()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.write:
            for name, total in ((TRAIN_TIME, self.total()), (CPU_TIME, self.total_cpu())):
                if total is not None:
                    times = read_times(self.out, name)
                    times[str(state.global_step)] = round(total, 3)
                    atomic_write_json(self.out / name, times)
