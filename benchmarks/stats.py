"""Paired statistics over interleaved rounds: overheads over the bare base and their bootstrap intervals.

Every round times each implementation once, so machine noise that hits a round hits all of them: the
per-round differences (step − bare step, lorazoo − PEFT) are much less noisy than the steps themselves.
Intervals are percentile bootstraps over rounds (resampling whole rounds keeps the pairing); a difference
is *resolved* when its interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP = 2000
LEVEL = 0.95
MIN_PAIRS = 5  # fewer paired rounds: a median, but no interval (a bootstrap of 2–4 points says nothing)


def _paired(*series: Sequence[float | None]) -> np.ndarray:
    """(rounds × series) array of the rounds in which every series has a time."""
    rows = [r for r in zip(*series, strict=True) if all(v is not None for v in r)]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(series))


def _interval(samples: np.ndarray) -> tuple[float, float]:
    lo, hi = np.nanpercentile(samples, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return float(lo), float(hi)


def _resamples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP, n))


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], seed: int = 0) -> dict[str, Any]:
    """Median over rounds of a − b (ms in, ms out), with its bootstrap interval; None when < 2 paired rounds."""
    x = _paired(a, b)
    if len(x) < 2:
        return {}
    diff = x[:, 0] - x[:, 1]
    if len(diff) < MIN_PAIRS:
        return {"median": float(np.median(diff)), "lo": None, "hi": None, "n": len(diff), "resolved": False}
    boot = np.median(diff[_resamples(len(diff), seed)], axis=1)
    lo, hi = _interval(boot)
    return {"median": float(np.median(diff)), "lo": lo, "hi": hi, "n": len(diff), "resolved": bool(lo > 0 or hi < 0)}


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Median over rounds of a / b (rounds where both have a time): a slow round slows both sides, so the
    per-round ratio is steadier than a ratio of the two medians when the machine's speed drifts."""
    x = _paired(a, b)
    x = x[x[:, 1] > 0]
    return float(np.median(x[:, 0] / x[:, 1])) if len(x) else None


def overhead_ratio(
    ours: Sequence[float | None], theirs: Sequence[float | None], bare: Sequence[float | None], seed: int = 0
) -> dict[str, Any]:
    """median(ours − bare) / median(theirs − bare) over the same rounds, with its bootstrap interval.

    The ratio is resolved (differs from 1) when its interval excludes 1; an interval is unbounded when
    the reference overhead itself is not resolved from 0 (its bootstrap medians reach ≤ 0).
    """
    x = _paired(ours, theirs, bare)
    if len(x) < 2:
        return {}
    o, t = x[:, 0] - x[:, 2], x[:, 1] - x[:, 2]
    idx = _resamples(len(x), seed)
    num, den = np.median(o[idx], axis=1), np.median(t[idx], axis=1)
    point_den = float(np.median(t))
    value = float(np.median(o)) / point_den if point_den > 0 else None
    if len(x) < MIN_PAIRS or np.any(den <= 0):
        return {"median": value, "lo": None, "hi": None, "n": len(x), "resolved": False}
    lo, hi = _interval(num / den)
    return {"median": value, "lo": lo, "hi": hi, "n": len(x), "resolved": bool(lo > 1 or hi < 1)}
