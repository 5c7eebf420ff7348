"""The dev-score-by-step table of budget.md from the budget runs' curves.jsonl (issue 28 item 2).

    python results/study/budget_table.py pearson results/study/budget/stsb_lora results/study/budget/stsb_unilora

One column per run dir (``<method> <lr_dir>``), one row per evaluated step, then the per-method mean over the
runs of each method at each step; every value is an ``eval_<metric>`` row of a curves.jsonl. With two methods
run at the same seeds, a second table gives their paired gap at each step (lorazoo.study.stats: bootstrap and
t intervals; resolved when both exclude 0).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

from lorazoo.study.report import gap_cells
from lorazoo.study.stats import paired_difference
from lorazoo.train.engine.curves import CURVES_FILE, read_rows


def scores(run_dir: Path, metric: str) -> dict[int, float]:
    """step → dev score of one run's periodic evaluations."""
    key = f"eval_{metric}"
    return {int(row["step"]): float(row[key]) for row in read_rows(run_dir / CURVES_FILE) if key in row}


def seed_of(run_dir: Path) -> int:
    """The seed of a budget run dir, named ``lr_<lr>_seed_<seed>`` by budget.sh."""
    return int(run_dir.name.rsplit("_seed_", 1)[1])


def paired_table(by_seed: dict[str, dict[int, dict[int, float]]], steps: list[int]) -> None:
    """A − B at each step, paired by seed, for the two methods given."""
    a, b = by_seed
    print(f"\n| step | seeds | {a} − {b} | bootstrap interval | t interval | resolved |\n|---|---|---|---|---|---|")
    for step in steps:
        at = {m: {seed: col[step] for seed, col in runs.items() if step in col} for m, runs in by_seed.items()}
        pair = paired_difference(a, b, at[a], at[b])
        if pair is not None:
            print(f"| {step} | {gap_cells(pair)}")


def main(metric: str, sweeps: list[str]) -> None:
    columns: dict[str, dict[int, float]] = {}
    methods: dict[str, list[str]] = defaultdict(list)
    by_seed: dict[str, dict[int, dict[int, float]]] = defaultdict(dict)
    for sweep in map(Path, sweeps):
        method = sweep.name.removeprefix("stsb_")
        for run_dir in sorted(p.parent for p in sweep.glob(f"*/{CURVES_FILE}")):
            name = f"{method} {run_dir.name}"
            columns[name] = scores(run_dir, metric)
            methods[method].append(name)
            by_seed[method][seed_of(run_dir)] = columns[name]
    steps = sorted({s for col in columns.values() for s in col})
    header = [*columns, *(f"{m} mean" for m in methods)]
    print("| step | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for step in steps:
        cells = [f"{columns[c][step]:.4f}" if step in columns[c] else "–" for c in columns]
        for names in methods.values():
            values = [columns[n][step] for n in names if step in columns[n]]
            cells.append(f"{mean(values):.4f}" if len(values) == len(names) else "–")
        print(f"| {step} | " + " | ".join(cells) + " |")
    if len(by_seed) == 2:
        paired_table(by_seed, steps)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
