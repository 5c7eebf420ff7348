"""Errors of the training runner; each is a LoraZooError so the CLI prints it as one line."""

from __future__ import annotations

import shutil
from pathlib import Path

from lorazoo.errors import ConfigError, LoraZooError, ModelUnavailableError


class DataUnavailableError(LoraZooError, OSError):
    """A data set is neither on disk nor reachable on the hub."""


class DataFormatError(LoraZooError, ValueError):
    """A local data file is empty or malformed (the message names the file and line)."""


class NonFiniteLossError(LoraZooError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


class NonFiniteMetricError(LoraZooError, FloatingPointError):
    """A final metric is NaN/inf: the run is failed rather than reported."""


class WriteFailedError(LoraZooError, OSError):
    """A file of the run could not be written (a full disk, a file size limit); torch reports these as a
    RuntimeError of its stream writer, which this names with the folder and the free space there."""

    MARKS = ("PytorchStreamWriter", "inline_container", "file write failed")  # torch.save's write failures

    @classmethod
    def from_torch(cls, folder: Path, exc: RuntimeError) -> WriteFailedError | None:
        """The error for a torch.save write failure in ``folder``; None for any other RuntimeError."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not any(mark in text for mark in cls.MARKS):
            return None
        try:
            free = f"{shutil.disk_usage(folder if folder.exists() else folder.parent).free / 2**20:,.1f} MiB free"
        except OSError:
            free = "free space unknown"
        return cls(
            f"writing {str(folder)!r} failed ({text}; {free} there); free space or pick another hydra.run.dir "
            "(the last complete checkpoint is kept)"
        )


class RunDirError(LoraZooError, RuntimeError):
    """A run dir belongs to another run, holds foreign files, or is in use by a running job."""

    _lorazoo_recorded = True  # never write a failed metrics.json into a directory that is not this run's


class RemoteCodeError(LoraZooError, RuntimeError):
    """A model or tokenizer needs its own Python code to load; lorazoo never runs it (trust_remote_code=False)."""


__all__ = [
    "RemoteCodeError",
    "RunDirError",
    "ConfigError",
    "DataFormatError",
    "DataUnavailableError",
    "ModelUnavailableError",
    "NonFiniteLossError",
    "NonFiniteMetricError",
    "WriteFailedError",
]
