"""The paired-round statistics of the benchmarks on constructed series (no timing involved)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import stats  # noqa: E402  (after the sys.path insert above)


def test_paired_difference_removes_round_noise():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 50, 30)  # large per-round noise shared by both series
    a, b = list(100 + noise + 2 + rng.normal(0, 0.5, 30)), list(100 + noise)
    d = stats.paired_difference(a, b)
    assert d["n"] == 30 and d["lo"] < 2 < d["hi"] and d["resolved"]
    null = stats.paired_difference(list(100 + noise + rng.normal(0, 0.5, 30)), b)
    assert null["lo"] < 0 < null["hi"] and not null["resolved"]


def test_missing_rounds_are_left_out_of_the_pairs():
    d = stats.paired_difference([1.0, None, 3.0, 4.0], [0.0, 1.0, None, 1.0])
    assert d["n"] == 2 and d["median"] == 2.0
    assert d["lo"] is None and not d["resolved"]  # too few pairs for an interval
    assert stats.paired_difference([1.0, None], [0.0, 1.0]) == {}


def test_overhead_ratio_and_unresolved_reference():
    bare = [100.0 + i for i in range(20)]
    ratio = stats.overhead_ratio([b + 10 + 0.1 * (i % 3) for i, b in enumerate(bare)], [b + 20 for b in bare], bare)
    assert abs(ratio["median"] - 0.5) < 0.01 and ratio["hi"] < 1 and ratio["resolved"]
    flat = stats.overhead_ratio([b + 10 for b in bare], [b + (1 if i % 2 else -1) for i, b in enumerate(bare)], bare)
    assert flat["lo"] is None and not flat["resolved"]  # PEFT's own overhead is not resolved from 0
