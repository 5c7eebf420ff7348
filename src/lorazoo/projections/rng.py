"""Counter-based random numbers that do not depend on torch's RNG, numpy's bit generators or the machine.

Each value is a SplitMix64 hash of (seed, purpose, position), so the same (seed, layout) gives the same
indices and matrices everywhere, and any slice of a huge random matrix can be generated on its own (the
Gaussian projection uses that to stream its D × d matrix in chunks).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_key(seed: int, purpose: str) -> np.uint64:
    """A 64-bit key for one independent stream: the seed mixed with a stable hash of the purpose."""
    mixed = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return np.uint64(mixed ^ np.uint64(zlib.crc32(purpose.encode())))


def random_bits(seed: int, purpose: str, count: int, start: int = 0) -> np.ndarray:
    counters = np.arange(start, start + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix64(_splitmix64(counters) + stream_key(seed, purpose))


def uniform(seed: int, purpose: str, count: int, low: float = 0.0, high: float = 1.0, start: int = 0) -> np.ndarray:
    """float64 values in [low, high), 53 random bits each."""
    unit = (random_bits(seed, purpose, count, start) >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    return low + (high - low) * unit


def normal(seed: int, purpose: str, count: int, start: int = 0) -> np.ndarray:
    """Standard normal float64 values by Box–Muller; value i depends only on (seed, purpose, start + i)."""
    u1 = uniform(seed, purpose + "/u1", count, start=start)
    u2 = uniform(seed, purpose + "/u2", count, start=start)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def permutation(seed: int, purpose: str, count: int) -> np.ndarray:
    """A uniformly random permutation of range(count) as int64: the order of hashed counters."""
    return np.argsort(random_bits(seed, purpose, count), kind="stable").astype(np.int64)


def rademacher(seed: int, purpose: str, count: int) -> np.ndarray:
    return np.where(random_bits(seed, purpose, count) >> np.uint64(63), 1.0, -1.0)


def as_tensor(values: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
