"""The dev-score-by-step table of budget.md from the budget runs' curves.jsonl (issue 28 item 2).

    python results/study/budget_table.py pearson results/study/budget/stsb_lora results/study/budget/stsb_unilora

One column per run dir (``<method> <lr_dir>``), one row per evaluated step, then the per-method mean over the
runs of each method at each step; every value is an ``eval_<metric>`` row of a curves.jsonl.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

from lorazoo.train.engine.curves import CURVES_FILE, read_rows


def scores(run_dir: Path, metric: str) -> dict[int, float]:
    """step → dev score of one run's periodic evaluations."""
    key = f"eval_{metric}"
    return {int(row["step"]): float(row[key]) for row in read_rows(run_dir / CURVES_FILE) if key in row}


def main(metric: str, sweeps: list[str]) -> None:
    columns: dict[str, dict[int, float]] = {}
    methods: dict[str, list[str]] = defaultdict(list)
    for sweep in map(Path, sweeps):
        method = sweep.name.removeprefix("stsb_")
        for run_dir in sorted(p.parent for p in sweep.glob(f"*/{CURVES_FILE}")):
            name = f"{method} {run_dir.name}"
            columns[name] = scores(run_dir, metric)
            methods[method].append(name)
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
