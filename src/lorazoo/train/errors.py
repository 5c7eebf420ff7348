"""Errors of the training runner; each is a LoraZooError so the CLI prints it as one line."""

from __future__ import annotations

from ..errors import ConfigError, LoraZooError, ModelUnavailableError


class DataUnavailableError(LoraZooError, OSError):
    """A data set is neither on disk nor reachable on the hub."""


class DataFormatError(LoraZooError, ValueError):
    """A local data file is empty or malformed (the message names the file and line)."""


class NonFiniteLossError(LoraZooError, FloatingPointError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


class NonFiniteMetricError(LoraZooError, FloatingPointError):
    """A final metric is NaN/inf: the run is failed rather than reported."""


class RunDirError(LoraZooError, RuntimeError):
    """A run dir belongs to another run, holds foreign files, or is in use by a running job."""

    _lorazoo_recorded = True  # never write a failed metrics.json into a directory that is not this run's


__all__ = [
    "RunDirError",
    "ConfigError",
    "DataFormatError",
    "DataUnavailableError",
    "ModelUnavailableError",
    "NonFiniteLossError",
    "NonFiniteMetricError",
]
