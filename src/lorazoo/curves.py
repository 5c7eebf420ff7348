"""Learning curves across runs: each run's ``curves.jsonl`` (written while it trains) drawn on one figure,
training loss on the left and the dev evaluations on the right (``lorazoo-compare --curves <png>``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_save_png
from lorazoo.train.engine.curves import CURVES_FILE, read_rows


def _label(run_dir: Path) -> str:
    """projection s<seed> task, from the run's metrics.json; the folder name when there is none."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return run_dir.name
    if not isinstance(record, dict):
        return run_dir.name
    parts = [record.get("projection"), f"s{record.get('seed')}", record.get("task")]
    return " ".join(str(p) for p in parts if p is not None) or run_dir.name


def _eval_metric(rows: list[dict[str, Any]]) -> str | None:
    """The score drawn on the right: the first task metric the evaluations report, else eval_loss."""
    keys = {k for r in rows for k in r if k.startswith("eval_")}
    named = sorted(k for k in keys if k != "eval_loss")
    return named[0] if named else ("eval_loss" if keys else None)


def plot_curves(run_dirs: list[Path], path: str | Path) -> Path | None:
    """One PNG of every run's training loss and dev evaluation against the step; None when no run has a curve."""
    curves = [(d, rows) for d in run_dirs if (rows := read_rows(Path(d) / CURVES_FILE))]
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    metrics: set[str] = set()
    for run_dir, rows in curves:
        label = _label(Path(run_dir))
        train = [r for r in rows if "loss" in r]
        line = left.plot([r["step"] for r in train], [r["loss"] for r in train], label=label)[0]
        metric = _eval_metric(rows)
        evals = [r for r in rows if metric in r] if metric else []
        if metric and evals:
            metrics.add(metric)
            right.plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o", color=line.get_color())
    left.set_title("training loss (mean over each logged span)", fontsize=10)
    right.set_title(f"dev evaluation: {', '.join(sorted(metrics)) or 'none logged'}", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return atomic_save_png(path, fig)
