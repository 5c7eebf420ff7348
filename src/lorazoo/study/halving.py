"""Successive halving over a log grid of lr multipliers, and widening when the best sits at an edge.

A trial is an integer grid index ``i``: its lrs are the method's paper lrs times ``step ** i``. Index
integers (not floats) keep trials identical across resumes and let a widened grid extend the old one
exactly. Rung ``k`` trains ``budget / eta ** (rungs - 1 - k)`` steps; the best ``1 / eta`` of a rung's
trials go on to the next rung (Jamieson & Talwalkar 2016, as Optuna's SuccessiveHalvingPruner). Every rung
is its own run at its own step count (a run cannot be extended to more steps without changing its
schedule), so a resumed study reuses every completed rung run and launches only what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lorazoo.errors import LoraZooError

STEP = 10 ** (3 / 7)  # 8 grid points span 1/10 .. 100 × the paper lr: the lr_<name> Optuna range (config/store)
FIRST = (-2, 5)  # the first grid: indices -2..5 → 0.1 × .. 100 × the paper lr


class HalvingError(LoraZooError, ValueError):
    """A halving plan lorazoo cannot run (too few trials, budgets that are not whole steps)."""


@dataclass(frozen=True)
class Plan:
    """The shape of a search: the full step budget, how many rungs and the halving rate."""

    budget: int
    rungs: int = 3
    eta: int = 2
    max_widen: int = 2  # how many times the grid may grow past an edge
    widen_by: int = 2  # grid points added beyond the edge each time

    def __post_init__(self) -> None:
        if self.rungs < 1 or self.eta < 2 or self.budget < 1:
            raise HalvingError(
                f"halving plan budget={self.budget}, rungs={self.rungs}, eta={self.eta}; "
                "valid: budget >= 1, rungs >= 1, eta >= 2"
            )
        smallest = self.budget / self.eta ** (self.rungs - 1)
        if smallest != int(smallest):
            raise HalvingError(
                f"budget {self.budget} steps is not divisible by eta**(rungs-1) = {self.eta ** (self.rungs - 1)}; "
                f"valid: a budget that is a multiple of it, e.g. {self.eta ** (self.rungs - 1) * max(1, round(smallest))}"
            )

    def steps(self, rung: int) -> int:
        """Training steps of rung ``rung`` (the last rung is the full budget)."""
        return self.budget // self.eta ** (self.rungs - 1 - rung)


def multiplier(index: int) -> float:
    """The factor on the paper lr of grid index ``index``: 1/10 at the first grid's lowest point."""
    return 0.1 * STEP ** (index - FIRST[0])


@dataclass
class Rung:
    """Scores of one rung: trial index → held-in score, oriented so that larger is better (None: failed)."""

    steps: int
    scores: dict[int, float | None] = field(default_factory=dict)

    def ranked(self) -> list[int]:
        """Trials best first; failed and non-finite ones last (never promoted ahead of a scored trial)."""

        def key(i: int) -> tuple[int, float, int]:
            s = self.scores[i]
            ok = s is not None and math.isfinite(s)
            return (0 if ok else 1, -(s if ok and s is not None else 0.0), i)

        return sorted(self.scores, key=key)

    def best(self) -> int | None:
        ranked = self.ranked()
        top = ranked[0] if ranked else None
        return top if top is not None and self.scores[top] is not None else None


def promoted(rung: Rung, eta: int) -> list[int]:
    """The trials the next rung continues: the best ``ceil(n / eta)`` that have a score."""
    scored = [i for i in rung.ranked() if rung.scores[i] is not None and math.isfinite(rung.scores[i] or 0.0)]
    return sorted(scored[: max(1, math.ceil(len(rung.scores) / eta))]) if scored else []


def at_edge(best: int | None, grid: list[int]) -> str | None:
    """Which edge ("low" / "high") the best trial sits at: the grid's smallest / largest lr, else None."""
    if best is None or not grid:
        return None
    return "low" if best == min(grid) else "high" if best == max(grid) else None


def edge_of(rung: Rung, grid: list[int]) -> str | None:
    """The edge the rung's best sits at, unless a trial inside the grid scores as well (a tie, e.g. every
    trial at the majority rate, says nothing about where the optimum lies)."""
    best = rung.best()
    edge = at_edge(best, grid)
    inside = [rung.scores.get(i) for i in grid if i not in (min(grid), max(grid))]
    if edge is None or best is None or any(s is not None and s >= (rung.scores[best] or 0.0) for s in inside):
        return None
    return edge


def widened(grid: list[int], edge: str, by: int) -> list[int]:
    """The grid extended by ``by`` points past ``edge`` at the same spacing."""
    if edge == "low":
        return [min(grid) - k for k in range(by, 0, -1)] + sorted(grid)
    return sorted(grid) + [max(grid) + k for k in range(1, by + 1)]


def first_grid(trials: int = FIRST[1] - FIRST[0] + 1) -> list[int]:
    """``trials`` indices centred like the default 8 (-2..5): 1/10 .. 100 × the paper lr for 8."""
    if trials < 2:
        raise HalvingError(f"--trials {trials}: valid: at least 2 lr trials (8 or more for the study)")
    low = FIRST[0] - (trials - 8) // 2 if trials >= 8 else FIRST[0]
    return list(range(low, low + trials))


@dataclass
class Search:
    """The whole search state, rebuilt from what is on disk on every resume."""

    plan: Plan
    grid: list[int]
    rungs: list[Rung] = field(default_factory=list)
    widenings: int = 0

    def edge(self) -> str | None:
        """The edge ("low"/"high") when the final winner, or the first rung's best after every allowed
        widening, is an extreme of everything tried (the range may not hold the optimum); None inside."""
        if not self.rungs:
            return None
        last = self.rungs[-1]
        return edge_of(self.rungs[0], self.grid) or (edge_of(last, self.grid) if last.best() == self.winner() else None)

    def winner(self) -> int | None:
        """The best trial of the highest rung that has a score."""
        for rung in reversed(self.rungs):
            best = rung.best()
            if best is not None:
                return best
        return None


Done = dict[tuple[int, int], "float | None"]  # (steps, trial index) → oriented score; None: the run failed


def advance(plan: Plan, first: list[int], done: Done) -> tuple[Search, tuple[int, list[int]] | None]:
    """Replay the search over the finished runs ``done`` and say what to run next: ``(steps, trial
    indices)``, or None when the search is complete. Pure and deterministic, so a resumed study takes
    exactly the decisions the interrupted one took (widening included) and reruns nothing finished."""
    search = Search(plan, sorted(first))
    while True:  # rung 0 over the grid, widened past an edge while allowed
        steps = plan.steps(0)
        missing = [i for i in search.grid if (steps, i) not in done]
        if missing:
            return search, (steps, missing)
        rung = Rung(steps, {i: done[(steps, i)] for i in search.grid})
        edge = edge_of(rung, search.grid)
        if edge is None or search.widenings >= plan.max_widen:
            search.rungs.append(rung)
            break
        search.grid = widened(search.grid, edge, plan.widen_by)
        search.widenings += 1
    for k in range(1, plan.rungs):
        steps = plan.steps(k)
        chosen = promoted(search.rungs[-1], plan.eta)
        missing = [i for i in chosen if (steps, i) not in done]
        if missing:
            return search, (steps, missing)
        search.rungs.append(Rung(steps, {i: done[(steps, i)] for i in chosen}))
    return search, None
