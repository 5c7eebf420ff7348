"""The study's results file, regenerated from the run records a ``lorazoo-fair`` output holds.

    python -m lorazoo.study.report results/study/runs --md results/study/RESULTS.md [--planned 120]

Reads <out>/<task>/<projection>/final/{tuning.json, seed_*/metrics.json, seed_*/curves.jsonl} (nothing else:
adapters and checkpoints may be absent) and writes, per task: each method's trainable count, tuned lr with its
edge flag, n seeds, both protocols (lorazoo.study.stats), the command that reproduces the row; the paired
differences and which gaps are resolved; a score-vs-trainable plot with intervals and the learning curves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorazoo.compare import Run, bootstrap_interval, load_run
from lorazoo.curves import plot_curves
from lorazoo.errors import LoraZooError
from lorazoo.files import atomic_save_png, atomic_write
from lorazoo.study import stats
from lorazoo.train.engine.curves import CURVES_FILE, read_rows
from lorazoo.train.records.run_dir import in_use


@dataclass
class Method:
    """One projection on one task: its completed final runs and its tuning record."""

    task: str
    projection: str
    runs: list[Run] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)

    @property
    def metric(self) -> str | None:
        return next((r.meaning.main_metric for r in self.runs if r.meaning is not None), None)

    @property
    def greater(self) -> bool:
        return next((r.meaning.greater_is_better for r in self.runs if r.meaning is not None), True)

    def final(self) -> dict[int, float]:
        """seed → final-checkpoint score (as reported, not oriented)."""
        metric = self.metric
        return {int(r.seed): r.metrics[metric] for r in self.runs if r.seed is not None and metric in r.metrics}

    def best(self) -> dict[int, float]:
        """seed → best periodic dev evaluation (oriented back to the reported sign)."""
        out: dict[int, float] = {}
        key = f"eval_{self.metric}"
        for r in self.runs:
            evals = [float(row[key]) for row in read_rows(r.run_dir / CURVES_FILE) if _finite(row.get(key))]
            if evals and r.seed is not None:
                out[int(r.seed)] = max(evals) if self.greater else min(evals)
        return out

    def protocols(self) -> stats.Protocols | None:
        """Both protocols, computed on oriented scores and reported in the metric's own sign."""
        sign = 1.0 if self.greater else -1.0
        oriented = stats.protocols(
            {s: sign * v for s, v in self.final().items()}, {s: sign * v for s, v in self.best().items()}
        )
        if oriented is None or sign > 0:
            return oriented
        best = None if oriented.best_median is None else -oriented.best_median
        return stats.Protocols(oriented.n, -oriented.final_mean, oriented.final_sd, best)

    @property
    def trainable(self) -> int | None:
        return next((r.trainable for r in self.runs if r.trainable is not None), None)

    def reproduce(self) -> str:
        """The command that reruns this row: the recorded lorazoo-fair command (search + seeds), else the
        seeds' shared run.py overrides."""
        if self.tuning.get("command"):
            return str(self.tuning["command"])
        shared = [o for o in (self.runs[0].overrides if self.runs else []) if not o.startswith("seed=")]
        shared = [o for o in shared if all(o in r.overrides for r in self.runs)]
        seeds = ",".join(str(s) for s in sorted(self.final()))
        return f"python run.py -m {' '.join(shared)} seed={seeds}"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class MixedSettingsError(LoraZooError):
    """A final dir whose completed runs ran different settings: one row would pool them."""


def one_setting(final: Path, runs: list[Run]) -> None:
    """A method's row is the seeds of one setting; runs of another (an older search's lr, another budget) in the
    same final dir would be averaged in silently, so they stop the report, naming the keys that differ."""
    other = next((r for r in runs if r.key != runs[0].key), None)
    if other is None:
        return
    a, b = runs[0].setting, other.setting
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:3]
    raise MixedSettingsError(
        f"{final}: runs {runs[0].run_dir.name} and {other.run_dir.name} ran different settings (differing: "
        f"{', '.join(f'{k}={a.get(k)!r} vs {b.get(k)!r}' for k in differ)}); a row pools one setting, so move the "
        "other runs out of this final dir"
    )


def collect(root: Path) -> tuple[list[Method], int]:
    """Methods found under ``root`` (completed final runs only) and how many final run dirs exist at all."""
    methods: list[Method] = []
    seen = 0
    for final in sorted(root.glob("*/*/final")):
        runs = [load_run(d) for d in sorted(p for p in final.iterdir() if p.is_dir())]
        seen += len(runs)
        done = [r for r in runs if r.status == "completed" and r.meaning is not None]
        one_setting(final, done)
        tuning = json.loads((final / "tuning.json").read_text()) if (final / "tuning.json").is_file() else {}
        if done:
            task = str(done[0].task)
            methods.append(Method(task, final.parent.name, done, tuning))
    return methods, seen


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def lr_cell(tuning: dict[str, Any]) -> str:
    """The tuned lr(s) and their multiple of the paper lr."""
    params = tuning.get("best_params") or {}
    shown = {k.removeprefix("optimizer."): f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in params.items()}
    lrs = ", ".join(f"{k} {v}" for k, v in shown.items()) or "–"
    mult = tuning.get("best_multiplier")
    return f"{lrs}{f' ({mult:.3g}× paper)' if mult else ''}"


def edge_cell(tuning: dict[str, Any]) -> str:
    """Whether the tuned lr sits at an edge of the searched grid, and the grid (× paper lr) it was searched in:
    "no" is stated, not left to the absence of a flag. "–" for a search without a grid (Optuna)."""
    grid = tuning.get("grid_multipliers") or []
    span = f" (grid {min(grid):.3g}–{max(grid):.3g}×)" if grid else ""
    if tuning.get("edge"):
        return f"**EDGE ({tuning['edge']})**{span}"
    return f"no{span}" if grid or "edge" in tuning else "–"


def task_section(task: str, methods: list[Method], figures: Path, md_dir: Path) -> list[str]:
    metric = methods[0].metric
    direction = "higher" if methods[0].greater else "lower"
    sizes = sorted({r.eval_examples for m in methods for r in m.runs if r.eval_examples})
    examples = " / ".join(f"{n:,}" for n in sizes) + " dev examples" if sizes else "the dev set"
    lines = [
        f"## {task}",
        "",
        f"Main metric: **{metric}** ({direction} is better), on {examples}. *final*: the last checkpoint, mean ± sd "
        "over seeds (lorazoo's protocol); *best-step median*: each seed's best periodic dev evaluation, median over "
        "seeds (the papers' protocol, VB-LoRA's GLUE tables); *inflation*: the second minus the first.",
        "",
        "| projection | trainable | tuned lr | at an edge? | n | final mean ± sd | best-step median | inflation | reproduce |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(methods, key=lambda m: (m.trainable or 0, m.projection))
    for m in ordered:
        p = m.protocols()
        if p is None:
            continue
        sd = f" ± {p.final_sd:.4f}" if p.final_sd is not None else ""
        lines.append(
            f"| {m.projection} | {m.trainable or 0:,} | {lr_cell(m.tuning)} | {edge_cell(m.tuning)} | {p.n} | {p.final_mean:.4f}{sd} | "
            f"{_fmt(p.best_median)} | {_fmt(p.inflation)} | `{m.reproduce()}` |"
        )
    sign = 1.0 if methods[0].greater else -1.0
    lines += spread_lines(ordered, sign)
    pairs = stats.all_pairs({m.projection: {s: sign * v for s, v in m.final().items()} for m in ordered})
    lines += [
        "",
        f"Paired differences (row − column method, final checkpoint, {direction}-is-better turned so that > 0 means "
        f"the first is better; same seeds): {stats.CONFIDENCE:.0%} percentile bootstrap over seeds and {stats.CONFIDENCE:.0%} "
        "paired t interval. A gap is *resolved* when both exclude 0 (with 5 seeds the bootstrap alone runs narrow).",
        "",
        "| A | B | seeds | A − B | bootstrap interval | t interval | resolved |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {pair.a} | {pair.b} | {gap_cells(pair)}" for pair in pairs]
    if not pairs:
        lines.append("| – | – | – | – | – | – | no pair has 2 shared seeds yet |")
    slug = task.replace("/", "_")
    plot = plot_scores(task, ordered, figures / f"{slug}_scores.png")
    curves = plot_curves({m.projection: [r.run_dir for r in m.runs] for m in ordered}, figures / f"{slug}_curves.png")
    for title, path in (("score vs trainable parameters", plot), ("learning curves", curves)):
        if path is not None:
            lines += ["", f"![{task}: {title}]({path.relative_to(md_dir)})"]
    return lines + [""]


def gap_cells(pair: stats.Paired) -> str:
    """A paired gap's table cells: seeds, mean difference, both intervals, resolved."""
    return (
        f"{len(pair.seeds)} | {pair.mean:+.4f} | [{pair.low:+.4f}, {pair.high:+.4f}] | "
        f"[{pair.t_low:+.4f}, {pair.t_high:+.4f}] | {'yes' if pair.resolved else 'no'} |"
    )


def spread_lines(methods: list[Method], sign: float) -> list[str]:
    """The spread of tuned final means across methods, and who lies within 1 and 2 points (0.01, 0.02 in the
    metric's units) of the best: the *Learning Rate Matters* question, answered from the records."""
    finals = {m.projection: m.final() for m in methods}
    most = max((len(f) for f in finals.values()), default=0)
    means = {
        m.projection: sign * p.final_mean
        for m in methods
        if len(finals[m.projection]) == most and (p := m.protocols()) is not None
    }
    spread = stats.spread(means)
    if spread is None:
        return []
    within = {margin: spread.within(means, margin) for margin in (0.01, 0.02)}
    waiting = sorted(name for name, f in finals.items() if len(f) < most)
    left_out = f" Left out until {most} seeds finish: {', '.join(waiting)}." if waiting else ""
    return [
        "",
        f"Spread of the tuned final means over the {len(means)} methods with {most} seeds: best **{spread.best}** "
        f"{sign * spread.best_score:.4f}, worst **{spread.worst}** {sign * spread.worst_score:.4f}; range "
        f"**{spread.points:.4f}** ({spread.relative:.1%} of the best). Within 0.01 of the best: "
        f"{', '.join(within[0.01])}; within 0.02: {', '.join(within[0.02])}.{left_out}",
    ]


def _setting(m: Method) -> str:
    """Steps and dev examples of a method's runs, as recorded."""
    steps = sorted({int(r.steps) for r in m.runs if r.steps is not None})
    examples = sorted({int(r.eval_examples) for r in m.runs if r.eval_examples})
    return f"{'/'.join(map(str, steps)) or '?'} steps, {'/'.join(f'{n:,}' for n in examples) or '?'} dev"


def _mean_sd(p: stats.Protocols) -> str:
    return f"{p.final_mean:.4f}" + (f" ± {p.final_sd:.4f}" if p.final_sd is not None else "")


def against_before(task: str, methods: list[Method], earlier: list[Method], before: Path) -> list[str]:
    """Each method of ``task`` beside its row in an earlier study (final checkpoint, mean ± sd): what the
    budget, search and dev set changed; the spread of both over the methods they share."""
    now = {m.projection: m for m in methods if m.task == task}
    then = {m.projection: m for m in earlier if m.task == task}
    shared = [name for name in now if name in then]
    if not shared:
        return []
    lines = [
        f"### {task} against the earlier study ({before})",
        "",
        "| projection | earlier: setting | n | tuned lr | final mean ± sd | now: n | final mean ± sd | change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    sign = 1.0 if now[shared[0]].greater else -1.0
    old_means, new_means = {}, {}
    for name in sorted(shared, key=lambda n: (now[n].trainable or 0, n)):
        old_p, new_p = then[name].protocols(), now[name].protocols()
        if old_p is None or new_p is None:
            continue
        old_means[name], new_means[name] = sign * old_p.final_mean, sign * new_p.final_mean
        lines.append(
            f"| {name} | {_setting(then[name])} | {old_p.n} | {lr_cell(then[name].tuning)} | {_mean_sd(old_p)} | "
            f"{new_p.n} | {_mean_sd(new_p)} | {new_p.final_mean - old_p.final_mean:+.4f} |"
        )
    spreads = [(label, stats.spread(means)) for label, means in (("earlier", old_means), ("now", new_means))]
    ranges = "; ".join(f"{label} {s.points:.4f} ({s.best} − {s.worst})" for label, s in spreads if s is not None)
    if ranges:
        lines += ["", f"Range of the final means over these {len(old_means)} methods: {ranges}."]
    return [*lines, ""]


def plot_scores(task: str, methods: list[Method], path: Path) -> Path | None:
    """Final mean with compare's bootstrap interval of the mean against trainable parameters (log x)."""
    points = [(m, p) for m in methods if (p := m.protocols()) is not None and m.trainable]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for m, p in points:
        low, high = bootstrap_interval(list(m.final().values())) or (p.final_mean, p.final_mean)
        bar = [[max(0.0, p.final_mean - low)], [max(0.0, high - p.final_mean)]]  # equal seeds: rounding only
        ax.errorbar([float(m.trainable or 0)], [p.final_mean], yerr=bar, fmt="o", capsize=4)
        ax.annotate(m.projection, (m.trainable, p.final_mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable adapter parameters (log)")
    ax.set_ylabel(f"{points[0][0].metric} (final: mean, 95% bootstrap interval over seeds)")
    ax.set_title(f"{task}: score vs trainable parameters", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save_png(path, fig)


def search_progress(root: Path) -> list[str]:
    """Per task and method, the halving rungs on disk (finished / started runs at each step count) and the CPU
    time its completed runs recorded."""
    lines: list[str] = []
    total = 0.0
    for search in sorted(root.glob("*/*/search")):
        rungs = []
        for rung in sorted(search.glob("steps_*"), key=lambda d: int(d.name.removeprefix("steps_"))):
            runs = [d for d in rung.iterdir() if d.is_dir()]
            done = sum(1 for d in runs if _status(d) == "completed")
            rungs.append(f"{rung.name.removeprefix('steps_')} steps: {done}/{len(runs)}")
        tuned = (search.parent / "final" / "tuning.json").is_file()
        state = "tuned" if tuned else "searching"
        hours = recorded_cpu_hours(search.parent)
        total += hours
        lines.append(
            f"| {search.parent.parent.name} | {search.parent.name} | {state} | {'; '.join(rungs) or '–'} | "
            f"{hours:.2f} |"
        )
    if not lines:
        return []
    head = [
        "## lr search progress and cost",
        "",
        "*CPU-h*: the training CPU time the completed runs recorded (`cpu_time_s`: training with its periodic "
        "evaluations, across resumes), search and seeds together; start-up and each run's final evaluation are not "
        f"in it. Total so far: **{total:.2f} CPU-h**.",
        "",
        "| task | projection | state | rung runs finished / started | CPU-h |",
        "|---|---|---|---|---|",
    ]
    return [*head, *lines, ""]


def recorded_cpu_hours(method_dir: Path) -> float:
    """Sum of ``cpu_time_s`` over the completed run records under ``method_dir`` (search and final), in hours."""
    seconds = 0.0
    for metrics in method_dir.rglob("metrics.json"):
        record = _record(metrics.parent)
        if record.get("status") == "completed" and _finite(record.get("cpu_time_s")):
            seconds += float(record["cpu_time_s"])
    return seconds / 3600


def _record(run_dir: Path) -> dict[str, Any]:
    """A run dir's metrics.json, or {} when it is missing, unreadable or not an object."""
    try:
        record = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _status(run_dir: Path) -> str | None:
    return _record(run_dir).get("status")


def render(root: Path, md: Path, planned: int | None = None, before: Path | None = None) -> str:
    """The whole results file (also written to ``md``), with a partial banner while runs are missing; with
    ``before`` (an earlier lorazoo-fair --out), a section per task setting each method against that study."""
    methods, seen = collect(root)
    earlier = collect(before)[0] if before is not None else []
    completed = sum(len(m.runs) for m in methods)
    lines = [f"# Study results: {root}", ""]
    if planned is not None and completed < planned:
        lines += [
            f"> **partial: {completed} of {planned} final runs** completed; rerun the study command to continue.",
            "",
        ]
    flag = f" --before {before}" if before is not None else ""
    lines += [f"Regenerated by `python -m lorazoo.study.report {root} --md {md}{flag}` from the run records only.", ""]
    for task in sorted({m.task for m in methods}):
        lines += task_section(task, [m for m in methods if m.task == task], md.parent / "figures", md.parent)
        if before is not None:
            lines += against_before(task, methods, earlier, before)
    if not methods:
        lines += [f"No completed final run under {root} yet ({seen} run dirs found).", ""]
    lines += search_progress(root)
    text = "\n".join(lines) + "\n"

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(md, write)
    return text


RECORD_SKIP = ("adapter", "checkpoints", ".lorazoo.lock")  # weights, resumable state and the run-dir lock


def completed_records(root: Path) -> list[Path]:
    """The files to commit: every file of each completed run dir except weights and checkpoints, and the
    sweep-level records (tuning.json, multirun.yaml). An unfinished run's files are left out, and so is a run
    whose lock a live process still holds (its record says completed before its last logs are written)."""
    files = sorted(root.glob("*/*/final/tuning.json")) + sorted(root.rglob("multirun.yaml"))
    for metrics in sorted(root.rglob("metrics.json")):
        if _status(metrics.parent) != "completed" or in_use(metrics.parent):  # a live run may still write
            continue
        for path in sorted(metrics.parent.rglob("*")):
            if path.is_file() and not set(path.relative_to(metrics.parent).parts) & set(RECORD_SKIP):
                files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lorazoo.study.report", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("root", help="a lorazoo-fair --out directory")
    p.add_argument("--md", default="results/study/RESULTS.md", help="the results file to write")
    p.add_argument("--planned", type=int, default=None, help="final runs the study plans (for the partial banner)")
    p.add_argument("--before", default=None, help="an earlier lorazoo-fair --out to set each method against")
    p.add_argument(
        "--completed", action="store_true", help="print the record files of completed runs (for git add) and stop"
    )
    args = p.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        p.error(f"{args.root!r} is not a directory; valid: a lorazoo-fair --out directory")
    if args.completed:
        print("\n".join(str(f) for f in completed_records(root)))
        return 0
    md = Path(args.md)
    md.parent.mkdir(parents=True, exist_ok=True)
    before = Path(args.before) if args.before else None
    if before is not None and not before.is_dir():
        p.error(f"--before {args.before!r} is not a directory; valid: an earlier lorazoo-fair --out directory")
    try:
        render(root, md, args.planned, before)
    except MixedSettingsError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
