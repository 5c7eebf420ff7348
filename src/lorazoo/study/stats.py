"""The two reporting protocols and paired differences between methods, from per-seed scores.

lorazoo's protocol: the final checkpoint's score, mean ± sample sd over seeds. The papers' protocol (VB-LoRA's
GLUE tables, issue #1 of its repo): the median over seeds of each seed's best evaluated step. Both come from
the same runs; the gap between them is how much choosing the step on the dev set inflates a score.
Scores are oriented by the caller when lower is better, so "best" is always the maximum here.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass(frozen=True)
class Protocols:
    """One method's scores under both protocols (``n``: seeds counted)."""

    n: int
    final_mean: float
    final_sd: float | None  # None for one seed
    best_median: float | None  # None when no seed has periodic evaluations

    @property
    def inflation(self) -> float | None:
        """Papers' protocol minus lorazoo's: what picking the best step and the median adds."""
        return None if self.best_median is None else self.best_median - self.final_mean


def protocols(final: dict[int, float], best: dict[int, float]) -> Protocols | None:
    """``final``: seed → final score; ``best``: seed → best evaluated score of that seed (final included)."""
    scores = [v for v in final.values() if math.isfinite(v)]
    if not scores:
        return None
    peaks = [max(best[s], final[s]) for s in final if s in best and math.isfinite(best[s])]
    return Protocols(
        n=len(scores),
        final_mean=statistics.fmean(scores),
        final_sd=statistics.stdev(scores) if len(scores) > 1 else None,
        best_median=statistics.median(peaks) if peaks else None,
    )


@dataclass(frozen=True)
class Paired:
    """A − B over the seeds both ran: mean difference, its percentile bootstrap interval and its paired t
    interval. With 5 seeds the bootstrap only resamples 5 differences and runs narrow; the t interval widens by
    Student's t but assumes normal differences. Each covers the other's weakness, so both must exclude 0."""

    a: str
    b: str
    seeds: tuple[int, ...]
    mean: float
    low: float
    high: float
    t_low: float
    t_high: float

    @property
    def resolved(self) -> bool:
        """Both intervals exclude 0: the sign of the gap is resolved at this many seeds."""
        return (self.low > 0 and self.t_low > 0) or (self.high < 0 and self.t_high < 0)


def paired_difference(a: str, b: str, scores_a: dict[int, float], scores_b: dict[int, float]) -> Paired | None:
    """Paired by seed (the same seed: same data order and head init), resampling seeds with replacement;
    a fixed generator so the table is the same on every machine. None with fewer than 2 shared seeds."""
    seeds = tuple(sorted(set(scores_a) & set(scores_b)))
    if len(seeds) < 2:
        return None
    diffs = np.array([scores_a[s] - scores_b[s] for s in seeds], dtype=float)
    generator = np.random.default_rng(0)
    means = diffs[generator.integers(0, len(diffs), size=(RESAMPLES, len(diffs)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    t_low, t_high = t_interval(diffs)
    return Paired(a, b, seeds, float(diffs.mean()), float(low), float(high), t_low, t_high)


def t_interval(diffs: np.ndarray) -> tuple[float, float]:
    """The paired t interval of the mean difference: mean ± t(1 − α/2, n − 1) · sd / √n."""
    from scipy.stats import t

    half = float(t.ppf(1 - (1 - CONFIDENCE) / 2, len(diffs) - 1)) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return float(diffs.mean()) - half, float(diffs.mean()) + half


def all_pairs(scores: dict[str, dict[int, float]]) -> list[Paired]:
    """Every unordered pair of methods (in the given order), those with ≥ 2 shared seeds."""
    names = list(scores)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pair = paired_difference(a, b, scores[a], scores[b])
            if pair is not None:
                out.append(pair)
    return out


@dataclass(frozen=True)
class Spread:
    """How far apart the methods' tuned final means lie (scores oriented: higher is better): the question of
    *Learning Rate Matters* (arXiv:2602.04998), whether tuned variants land within 1–2 % of each other."""

    best: str
    worst: str
    best_score: float
    worst_score: float

    @property
    def points(self) -> float:
        """best − worst in the metric's own units (×100: percentage points for an accuracy)."""
        return self.best_score - self.worst_score

    @property
    def relative(self) -> float:
        """best − worst as a fraction of the best score's magnitude."""
        return self.points / abs(self.best_score) if self.best_score else math.inf

    def within(self, scores: dict[str, float], margin: float) -> list[str]:
        """Methods whose mean lies within ``margin`` (metric units) of the best, best first."""
        near = [m for m, v in scores.items() if self.best_score - v <= margin + 1e-12]
        return sorted(near, key=lambda m: -scores[m])


def spread(scores: dict[str, float]) -> Spread | None:
    """``scores``: method → oriented final mean. None with fewer than 2 methods."""
    finite = {m: v for m, v in scores.items() if math.isfinite(v)}
    if len(finite) < 2:
        return None
    best = max(finite, key=lambda m: finite[m])
    worst = min(finite, key=lambda m: finite[m])
    return Spread(best, worst, finite[best], finite[worst])
