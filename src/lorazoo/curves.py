"""Learning curves across runs: each run's ``curves.jsonl`` (written while it trains) drawn on one figure,
training loss on the left and the dev evaluations on the right (``lorazoo-compare --curves <png>``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_save_png
from lorazoo.train.engine.curves import CURVES_FILE, read_rows


def mean_curve(series: list[dict[int, float]]) -> dict[int, float]:
    """The mean over runs at the steps every run logged (a seed's extra step would bias the mean)."""
    common = set.intersection(*(set(s) for s in series)) if series else set()
    return {step: sum(s[step] for s in series) / len(series) for step in sorted(common)}


def _eval_metric(rows: list[dict[str, Any]]) -> str | None:
    """The score drawn on the right: the first task metric the evaluations report, else eval_loss."""
    keys = {k for r in rows for k in r if k.startswith("eval_")}
    named = sorted(k for k in keys if k != "eval_loss")
    return named[0] if named else ("eval_loss" if keys else None)


def _draw(ax: Any, series: list[dict[int, float]], color: Any, marker: str | None) -> Any:
    """Each run thin and faint, their mean bold (one run: drawn bold alone); the bold line's handle."""
    for one in series if len(series) > 1 else []:
        ax.plot(list(one), list(one.values()), color=color, alpha=0.25, linewidth=0.8)
    mean = mean_curve(series)
    return ax.plot(list(mean), list(mean.values()), color=color, linewidth=2, marker=marker, markersize=4)[0]


def plot_curves(settings: Mapping[str, Sequence[Path]], path: str | Path) -> Path | None:
    """One PNG of the training loss and dev evaluation against the step. ``settings`` maps a label to the run
    dirs of one setting (its seeds; the caller groups, as its table does, so two settings are never pooled):
    one colour and legend entry a setting, its seeds faint and their mean bold. None when no run has a curve."""
    groups = {
        name: curves
        for name, dirs in settings.items()
        if (curves := [rows for d in dirs if (rows := read_rows(Path(d) / CURVES_FILE))])
    }
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    legend_inches = 0.2 * -(-len(groups) // 4) + 0.15  # four settings a legend row, under the panels
    height = 4.2 + legend_inches
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), dpi=110)
    metrics: set[str] = set()
    handles, labels = [], []
    for index, (name, runs) in enumerate(groups.items()):
        color = palette(index % palette.N)
        losses = [{r["step"]: r["loss"] for r in rows if "loss" in r} for rows in runs]
        handles.append(_draw(left, [c for c in losses if c], color, None))
        labels.append(f"{name} ({len(runs)} seeds)" if len(runs) > 1 else name)
        metric = next((m for rows in runs if (m := _eval_metric(rows))), None)
        evals = [{r["step"]: r[metric] for r in rows if metric in r} for rows in runs] if metric else []
        if any(evals):
            metrics.add(str(metric))
            _draw(right, [c for c in evals if c], color, "o")
    left.set_title("training loss (mean over each logged span)", fontsize=10)
    right.set_title(f"dev evaluation: {', '.join(sorted(metrics)) or 'none logged'}", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimizer step")
        ax.grid(True, alpha=0.3)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    return atomic_save_png(path, fig)
