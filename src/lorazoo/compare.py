"""Compare runs: which projection gives the best score per trainable parameter?

    lorazoo-compare multirun/2026-11-23/09-40-13 [more sweep or run dirs ...] --out results --name study
    (or: python scripts/compare.py ..., python -m lorazoo.compare ...)

Finds every run below the given directories (a run dir holds metrics.json and/or .hydra/config.yaml) and groups
completed runs by WHAT RAN: the run's resolved config (``lorazoo_run.json``'s identity, with the values fitted to
the model from metrics.json's ``fitted_to_model``) minus the seed, paths and logging, plus the sha256 of every data
file read. Runs that differ in anything else are separate rows, whatever their command lines looked like; two
runs of one setting and seed count once (flagged in the ``dup`` column). A run recorded before lorazoo wrote
``lorazoo_run.json`` and ``.hydra/config.yaml`` is keyed on its job overrides, the only record it has. Writes,
atomically:
  <out>/<name>.md                  one table per task, rows sorted by the main metric (best first; the metric
                                   and its direction are what each run's metrics.json states, or for a record
                                   from an older lorazoo what its task declares, see train/tasks/meaning.py): mean ± sd
                                   over seeds, n, a 95% bootstrap interval of the mean, trainable parameters, D,
                                   train wall and CPU seconds per run, the evaluation set, and each row's command;
  <out>/<name>_<task>.png          trainable parameters (log x) vs the task's main metric, one point per row
                                   with ±sd error bars, the Pareto front as a step line.
Rows scored on different evaluation sets (data files, task.max_eval_samples, task.split_seed, held-in split)
are never pooled, and the table says so. Runs that failed, are still running or lack metrics.json are listed in
their own section, never dropped. Runs of a fair comparison (scripts/fair_compare.py) are marked: a row whose
sweep dir holds tuning.json is "tuned" and shows the lr(s) the search chose; the search trials themselves (scored
on a held-in split of train, ``task.holdout_dev``) are summarised in their own section, not mixed with dev-set
results.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorazoo.errors import LoraZooError
from lorazoo.files import atomic_save_png, atomic_write
from lorazoo.train.records.config_diff import flatten
from lorazoo.train.tasks.meaning import MetricMeaning, recorded_meaning, task_node_of

# Config keys that cannot change what was trained or how it was scored: the seed (rows pool over it), where
# data and outputs live (the data's content is keyed by its sha256 instead), logging and budget keys.
NOT_SETTING = (
    "seed",
    "name",
    "data_root",
    "logger",
    "task.data_dir",
    "task.data_file",
    "task.train_file",
    "task.eval_file",
    "trainer.resume",
    "trainer.progress_bar",
    "trainer.logging_steps",
    "trainer.save_steps",
    "trainer.save_total_limit",
    "trainer.num_workers",
)
# Task keys that decide which examples a run is scored on (with the data files' sha256 and the example count).
EVAL_SET_KEYS = (
    "task.name",
    "task.max_eval_samples",
    "task.split_seed",
    "task.holdout_dev",
    "task.dev_fraction",
    "task.eval_size",
    "task.eval",
    "task.eval_split",
)
CONFIDENCE = 0.95
RESAMPLES = 2000


def _is(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@dataclass
class Run:
    """One run directory, whatever state it is in."""

    run_dir: Path
    status: str
    task: str | None = None
    projection: str | None = None
    model: str | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    trainable: int | None = None
    D: int | None = None
    wall_time_s: float | None = None
    cpu_time_s: float | None = None
    steps: int | None = None
    command: str | None = None  # the single job's command line
    overrides: list[str] = field(default_factory=list)
    majority_rate: float | None = None
    error: str | None = None
    tuning: dict[str, Any] | None = None  # tuning.json of a fair comparison's final sweep (best lrs, trials)
    config: dict[str, Any] = field(default_factory=dict)  # flattened resolved config as used (fitted values)
    data_sha256: dict[str, str] = field(default_factory=dict)
    eval_examples: int | None = None
    meaning: MetricMeaning | None = None  # the main metric and its direction, as the record states (completed runs)
    headline: list[str] = field(default_factory=list)  # the task's scores: metrics.json copies them to its top level

    @property
    def search_trial(self) -> bool:
        """An lr-search trial: scored on examples held out of train, not on the dev set."""
        held = self.config.get("task.holdout_dev")
        if held is None:
            held = next((o.split("=", 1)[1] for o in self.overrides if o.startswith("task.holdout_dev=")), None)
        return held not in (None, "null", "None")

    @property
    def setting(self) -> dict[str, Any]:
        """What ran, minus the seed: every config key that can change the result, plus the data's content."""
        keys = {k: v for k, v in self.config.items() if not _is(k, NOT_SETTING)}
        if not self.config:  # a run from before lorazoo_run.json: its job overrides are all there is
            keys = {o.split("=", 1)[0]: o.split("=", 1)[-1] for o in self.overrides if not _skip_override(o)}
        if self.data_sha256:  # the content, wherever the files were
            keys["data sha256"] = sorted(self.data_sha256.values())
        return keys

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (str(self.task), str(self.model), str(self.projection), _digest(self.setting))

    @property
    def eval_set(self) -> str:
        """A short id of the examples this run was scored on."""
        picked = {k: self.config.get(k) for k in EVAL_SET_KEYS if k in self.config}
        return _digest({**picked, "data": sorted(self.data_sha256.values()), "n": self.eval_examples})[:8]


def _skip_override(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return _is(key, NOT_SETTING) or key.startswith("hydra")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Group:
    """Completed runs of one setting (everything but the seed equal), summarised over seeds."""

    task: str
    model: str
    projection: str
    runs: list[Run]
    duplicates: list[Run] = field(default_factory=list)  # more runs of a seed already in ``runs``
    label: str = ""  # projection, plus the differing keys when a projection ran in several settings
    tag: str = ""  # the short form for plots: projection, or projection #k with several settings

    @property
    def meaning(self) -> MetricMeaning:
        """The main metric and its direction every run of the group recorded (group_runs keys on it)."""
        found = self.runs[0].meaning
        if found is None:
            raise ValueError(f"run {self.runs[0].run_dir} has no metric meaning; group_runs keeps completed runs only")
        return found

    @property
    def tuned(self) -> dict[str, Any] | None:
        """The lrs a fair comparison's search picked for this group (None: the config's lrs, not tuned)."""
        found = [r.tuning for r in self.runs if r.tuning]
        if not found or len(found) != len(self.runs):
            return None
        params = found[0].get("best_params") or {}
        return params if all(f"{k}={v}" in self.runs[0].overrides for k, v in params.items()) else None

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if _finite(r.metrics.get(metric))]

    def stat(self, metric: str) -> tuple[float, float] | None:
        vals = self.values(metric)
        if not vals:
            return None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    def interval(self, metric: str) -> tuple[float, float] | None:
        """A 95% percentile-bootstrap interval of the mean over seeds (scipy.stats.bootstrap); None below 2."""
        return bootstrap_interval(self.values(metric))

    @property
    def trainable(self) -> int | None:
        return _common(r.trainable for r in self.runs)

    @property
    def D(self) -> int | None:
        return _common(r.D for r in self.runs)

    def mean_of(self, name: str) -> float | None:
        found = [getattr(r, name) for r in self.runs if _finite(getattr(r, name))]
        return statistics.fmean(found) if found else None

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs if r.seed is not None)

    @property
    def eval_set(self) -> str:
        return self.runs[0].eval_set

    def dup_note(self) -> str:
        """'' or e.g. 'seed 0 ×2 (same result)': runs of a seed already counted, named and left out of n."""
        notes = []
        for seed in sorted({r.seed for r in self.duplicates}, key=str):
            kept = next(r for r in self.runs if r.seed == seed)
            extra = [r for r in self.duplicates if r.seed == seed]
            same = all(r.metrics == kept.metrics for r in extra)
            notes.append(f"seed {seed} ×{len(extra) + 1} ({'same result' if same else 'results differ'})")
        return "; ".join(notes)

    def command(self) -> str:
        """One line reproducing the group: the job overrides its runs share plus ``seed=<s1>,<s2>,...``."""
        others = [set(r.overrides) for r in self.runs[1:]]
        shared = [o for o in self.runs[0].overrides if not o.startswith("seed=") and all(o in s for s in others)]
        seeds = ",".join(str(s) for s in self.seeds)
        flag = "-m " if len(self.runs) > 1 else ""
        return f"python run.py {flag}{' '.join(shared)} seed={seeds}".replace("  ", " ")


def bootstrap_interval(values: list[float]) -> tuple[float, float] | None:
    """Percentile bootstrap of the mean, fixed generator (the same table on every machine)."""
    if len(values) < 2:
        return None
    if len(set(values)) == 1:
        return values[0], values[0]
    import numpy as np
    from scipy import stats

    generator = np.random.default_rng(0)
    seeded = {"rng": generator} if "rng" in inspect.signature(stats.bootstrap).parameters else {"random_state": 0}
    result = stats.bootstrap(
        (np.asarray(values),),
        np.mean,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        **seeded,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _common(values: Iterable[Any]) -> Any:
    distinct = {v for v in values if v is not None}
    return distinct.pop() if len(distinct) == 1 else None


# ----------------------------------------------------------------------------- reading runs
def find_run_dirs(roots: Iterable[str | Path]) -> list[Path]:
    """Every directory below ``roots`` holding a metrics.json or a Hydra config (a started run)."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        for path in root.rglob("metrics.json"):
            found.add(path.parent)
        for path in root.rglob(".hydra/config.yaml"):
            found.add(path.parent.parent)
    return sorted(found)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _name(config: dict | None, group: str) -> str | None:
    node = (config or {}).get(group)
    return node.get("name") if isinstance(node, dict) else None


def config_as_used(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The flattened config the run used: lorazoo_run.json's identity (else .hydra/config.yaml) with the values
    fitted to the model (metrics.json ``fitted_to_model``) in place of the composed ones."""
    identity = (_read_json(run_dir / "lorazoo_run.json") or {}).get("identity")
    if isinstance(identity, dict):
        config = {k: v for k, v in identity.items() if not k.startswith("lorazoo.")}
    else:
        composed = _read_yaml(run_dir / ".hydra" / "config.yaml")
        config = flatten(composed) if isinstance(composed, dict) else {}
    for key, change in (record.get("fitted_to_model") or {}).items():
        if isinstance(change, dict) and "to" in change:
            config[key] = change["to"]
    return config


def load_run(run_dir: Path) -> Run:
    """A Run from metrics.json, with task/projection/model/seed filled from the resolved config if needed."""
    composed = _read_yaml(run_dir / ".hydra" / "config.yaml")
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml") or []
    run = Run(
        run_dir=run_dir,
        status="missing metrics.json",
        task=_name(composed, "task"),
        projection=_name(composed, "projection"),
        model=_name(composed, "model"),
        seed=(composed or {}).get("seed"),
        overrides=list(overrides),
    )
    path = run_dir / "metrics.json"
    if not path.is_file():
        return run
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        run.status, run.error = "unreadable metrics.json", str(exc)
        return run
    run.status = str(record.get("status", "unknown"))
    for name in ("task", "projection", "model", "seed", "trainable", "D", "wall_time_s", "cpu_time_s", "steps"):
        if record.get(name) is not None:
            setattr(run, name, record[name])
    for name in ("command", "majority_rate", "error", "eval_examples"):
        if record.get(name) is not None:
            setattr(run, name, record[name])
    run.overrides = list(record.get("overrides") or run.overrides)
    run.config = config_as_used(run_dir, record)
    run.data_sha256 = dict(record.get("data_sha256") or {})
    metrics = dict(record.get("metrics") or {})
    run.headline = [k for k in metrics if _finite(record.get(k))]
    metrics.update({k: record[k] for k in run.headline})
    run.metrics = {k: float(v) for k, v in metrics.items() if _finite(v)}
    if run.status == "completed" and not run.metrics:
        run.status = "completed without metrics"
    if run.status == "completed":
        run.meaning = recorded_meaning(record, _task_node(run), f"{run_dir / 'metrics.json'}")
        if _finite(record.get(run.meaning.main_metric)):
            run.metrics[run.meaning.main_metric] = float(record[run.meaning.main_metric])
    tuning = _read_json(run_dir.parent / "tuning.json")
    run.tuning = tuning if isinstance(tuning, dict) else None
    return run


def _task_node(run: Run) -> dict[str, Any] | None:
    """The run's task config, to rebuild the task's metric meaning for a record that does not state it: the
    config as used, else (a run from before lorazoo_run.json) its task name and ``task.*`` job overrides."""
    node = task_node_of(run.config)
    if node is None and run.task:
        given = (o.split("=", 1) for o in run.overrides if o.startswith("task.") and "=" in o)
        node = task_node_of({"task.name": run.task, **{k: yaml.safe_load(v) for k, v in given}})
    return node


def table_meaning(groups: list[Group]) -> MetricMeaning:
    """The main metric and direction of one task table (group_runs puts groups of one meaning in a table)."""
    return groups[0].meaning


def _sort_key(meaning: MetricMeaning) -> Any:
    def key(group: Group) -> tuple[bool, float, str]:
        stat = group.stat(meaning.main_metric)
        if stat is None:
            return True, 0.0, group.label
        return False, -meaning.oriented(stat[0]), group.label

    return key


def group_runs(runs: list[Run]) -> tuple[dict[str, list[Group]], list[Run]]:
    """(completed runs grouped per task by what ran, rows best first by the main metric; the runs that did not
    complete). lr-search trials are left out: see search_summary."""
    buckets: dict[tuple[tuple[str, str, str, str], MetricMeaning | None], list[Run]] = defaultdict(list)
    bad = []
    for run in runs:
        if run.search_trial:
            continue
        if run.status == "completed":
            if run.meaning is None:  # a Run built by hand, not by load_run: its task's declaration
                run.meaning = recorded_meaning({}, _task_node(run), str(run.run_dir))
            buckets[(run.key, run.meaning)].append(run)
        else:
            bad.append(run)
    meanings: dict[str, set[MetricMeaning | None]] = defaultdict(set)
    for (key, meaning), _ in buckets.items():
        meanings[key[0]].add(meaning)
    per_task: dict[str, list[Group]] = defaultdict(list)
    for ((task, model, projection, _), meaning), members in buckets.items():
        members.sort(key=lambda r: (r.seed is None, str(r.seed), str(r.run_dir)))
        kept: list[Run] = []
        duplicates: list[Run] = []
        for run in members:  # one seed of one setting counts once: the first run dir (by path) is kept
            same_seed = run.seed is not None and any(k.seed == run.seed for k in kept)
            (duplicates if same_seed else kept).append(run)
        group = Group(task, model, projection, kept, duplicates, label=projection, tag=projection)
        if group.tuned is not None:
            group.label = group.tag = f"{projection} (tuned)"
        table = task if len(meanings[task]) == 1 or meaning is None else f"{task} ({meaning.main_metric})"
        per_task[table].append(group)  # runs of one task ranked by different metrics: a table per metric
    for groups in per_task.values():
        _label_settings(groups)
        groups.sort(key=_sort_key(table_meaning(groups)))
    return dict(sorted(per_task.items())), bad


def curve_settings(per_task: dict[str, list[Group]], bad: list[Run]) -> dict[str, list[Path]]:
    """Label → run dirs for the curve plot, from the table's rows (``group_runs``: the seeds of one setting
    together, never two settings pooled, lr-search trials left out); a run that did not complete is drawn alone,
    its status in the label."""
    settings: dict[str, list[Path]] = {}
    for task, groups in per_task.items():
        for group in groups:
            label = f"{group.label} {task}"
            label = f"{group.label} {group.model} {task}" if label in settings else label
            settings[label] = [run.run_dir for run in group.runs]
    for run in bad:
        settings[f"{run.projection} s{run.seed} {run.task} ({run.status}) {run.run_dir.name}"] = [run.run_dir]
    return settings


def _label_settings(groups: list[Group]) -> None:
    """Tell apart groups of one projection and model run in different settings by the keys they differ in."""
    siblings: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for g in groups:
        siblings[(g.model, g.projection)].append(g)
    for same in siblings.values():
        if len(same) < 2:
            continue
        settings = [g.runs[0].setting for g in same]
        keys = sorted({k for s in settings for k in s})
        differ = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings}) > 1]
        for k, g in enumerate(sorted(same, key=lambda g: _describe(g.runs[0].setting, differ)), start=1):
            tuned = " tuned" if g.tuned is not None else ""
            g.tag = f"{g.projection}{tuned} #{k}"
            g.label = f"{g.tag} ({_describe(g.runs[0].setting, differ) or 'defaults'})"


def _describe(setting: dict[str, Any], keys: list[str]) -> str:
    shown = []
    for key in keys[:4]:
        value = setting.get(key, "<absent>")
        shown.append(f"{key}={str(value)[:12]}" if key.startswith("data sha256") else f"{key}={value}")
    return " ".join(shown) + (f" (+{len(keys) - 4} more keys)" if len(keys) > 4 else "")


# ----------------------------------------------------------------------------- outputs
def pareto_front(points: list[tuple[float, float]], lower_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer parameters and a better metric)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1] if lower_is_better else -points[i][1]))
    front, best = [], math.inf if lower_is_better else -math.inf
    for i in order:
        y = points[i][1]
        if (y < best) if lower_is_better else (y > best):
            front.append(i)
            best = y
    return front


def _digits(x: float) -> int:
    return 2 if abs(x) >= 100 else 4


def _fmt(stat: tuple[float, float] | None, n: int) -> str:
    if stat is None:
        return "—"
    mean, std = stat
    digits = _digits(mean)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def _fmt_interval(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "—"
    digits = _digits(max(map(abs, interval)))
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _seconds(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "—"


def _int(x: int | None) -> str:
    return f"{x:,}" if x is not None else "mixed"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")


def seeds_phrase(counts: list[int]) -> str:
    """'1 seed', 'mean ± std over 3 seeds per point' or '... over 2-3 seeds per point' (grammar included)."""
    low, high = min(counts), max(counts)
    if high == 1:
        return "1 seed per point"
    span = f"{low}-{high}" if low != high else str(high)
    return f"mean ± std over {span} seeds per point"


def plot_task(task: str, metric: str, groups: list[Group], path: Path) -> Path | None:
    """Trainable parameters (log x) vs the main metric; one labelled point per group; Pareto front as a step line."""
    meaning = table_meaning(groups)
    if metric != meaning.main_metric:
        raise ValueError(f"plot_task draws the table's main metric {meaning.main_metric!r}, got metric={metric!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, labels, errors = [], [], []
    many_models = len({g.model for g in groups}) > 1
    for g in groups:
        stat = g.stat(metric)
        if stat is None or not g.trainable:
            continue
        points.append((float(g.trainable), stat[0]))
        errors.append(stat[1])
        labels.append(f"{g.tag} ({g.model})" if many_models else g.tag)
    if not points:
        return None
    lower = not meaning.greater_is_better
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    xs, ys = zip(*points)
    ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, color="tab:blue", ecolor="tab:gray", zorder=3)
    for (x, y), label in zip(points, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = pareto_front(points, lower)
    fx, fy = [points[i][0] for i in front], [points[i][1] for i in front]
    right = max(xs) * 3  # room for the labels right of the points
    ax.step([*fx, right], [*fy, fy[-1]], where="post", color="tab:red", alpha=0.7, label="Pareto front", zorder=2)
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="tab:red", zorder=4)
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 2, right)
    ax.set_xlabel("trainable parameters (adapter, log scale)")
    ax.set_ylabel(f"{metric} ({meaning.phrase})")
    majority = {r.majority_rate for g in groups for r in g.runs if r.majority_rate is not None}
    if metric == "accuracy" and len(majority) == 1:  # what always predicting the most frequent class scores
        ax.axhline(majority.pop(), color="tab:gray", linestyle="--", linewidth=1, label="majority class", zorder=1)
    ax.set_title(
        f"{task}: {metric} vs trainable parameters\n({seeds_phrase([len(g.runs) for g in groups])})", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return atomic_save_png(path, fig)


def task_table(task: str, metric: str, groups: list[Group]) -> list[str]:
    headline = dict.fromkeys(k for g in groups for r in g.runs for k in r.headline)  # in the records' order
    keys = [k for k in headline if k not in (metric, "loss") and any(g.values(k) for g in groups)]
    keys += ["loss"] if any(g.values("loss") for g in groups) and metric != "loss" else []
    head = [
        "projection",
        "model",
        "n",
        f"**{metric}**",
        f"{int(CONFIDENCE * 100)}% CI",
        *[("eval loss" if k == "loss" else k) for k in keys],
        "trainable",
        "D",
        "train s (wall)",
        "train s (CPU)",
        "steps",
        "tuned lr",
        "eval set",
        "dup",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        n = len(g.runs)
        steps = _common(r.steps for r in g.runs)
        cells = [
            g.label,
            g.model,
            str(n),
            _fmt(g.stat(metric), n),
            _fmt_interval(g.interval(metric)),
            *[_fmt(g.stat(k), n) for k in keys],
            _int(g.trainable),
            _int(g.D),
            _seconds(g.mean_of("wall_time_s")),
            _seconds(g.mean_of("cpu_time_s")),
            str(steps) if steps is not None else "mixed",
            tuned_cell(g),
            g.eval_set,
            g.dup_note() or "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def tuned_cell(group: Group) -> str:
    """The searched lr(s) of a tuned group, e.g. ``lr 3.1e-03``; "no" when the config's lr was used."""
    if group.tuned is None:
        return "no"
    return ", ".join(f"{k.split('.', 1)[-1]} {float(v):.2g}" for k, v in group.tuned.items()) or "no"


def eval_set_note(groups: list[Group]) -> str:
    """A warning when a task's rows were scored on different examples (they are never pooled)."""
    sets = sorted({g.eval_set for g in groups})
    if len(sets) < 2:
        return ""
    return (
        f"**Not comparable across evaluation sets:** these rows were scored on {len(sets)} different evaluation "
        f"sets ({', '.join(sets)}: data files, task.max_eval_samples, task.split_seed or held-in split differ); "
        "they are kept in separate rows, compare only rows with the same `eval set`."
    )


def search_summary(runs: list[Run]) -> list[str]:
    """One row per task × projection of lr-search trials: how many ran, failed, and the best held-in score."""
    trials: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.search_trial:
            trials[(str(run.task), str(run.projection))].append(run)
    if not trials:
        return []
    lines = [
        "## lr search trials (held-in split of train, not the dev set)",
        "",
        "| task | projection | trials | completed | best held-in score | best trial's overrides |",
        "|---|---|---|---|---|---|",
    ]
    for (task, projection), members in sorted(trials.items()):
        meaning = next((r.meaning for r in members if r.meaning is not None), None)
        metric = meaning.main_metric if meaning else "loss"
        done = [r for r in members if r.status == "completed" and r.meaning == meaning and metric in r.metrics]
        best = _best(done, meaning) if meaning and done else None
        lrs = " ".join(o for o in best.overrides if ".lr" in o.split("=", 1)[0]) if best else "—"
        lines.append(
            f"| {task} | {projection} | {len(members)} | {len(done)} | "
            f"{f'{best.metrics[metric]:.4f}' if best else '—'} | `{lrs}` |"
        )
    return [*lines, ""]


def _best(runs: list[Run], meaning: MetricMeaning) -> Run:
    return max(runs, key=lambda r: meaning.oriented(r.metrics[meaning.main_metric]))


def render(
    per_task: dict[str, list[Group]],
    bad: list[Run],
    images: dict[str, Path | None],
    name: str,
    roots: list[str],
    trials: list[str] | None = None,
) -> str:
    lines = [
        f"# {name}: runs compared",
        "",
        f"Generated by `lorazoo-compare {' '.join(roots)} --name {name}`. One row per setting (the resolved, "
        "fitted config minus the seed, plus the data files' sha256); rows sorted by the main metric, best first. "
        "Mean ± sample sd over seeds; `n` = distinct completed seeds (a repeated seed counts once, see `dup`); "
        f"CI = {int(CONFIDENCE * 100)}% percentile-bootstrap interval of the mean ({RESAMPLES} resamples; "
        "needs n ≥ 2). Trainable = adapter parameters (the classifier head is not counted); train s = training "
        "time per run, wall clock and CPU seconds of the training process and its workers (evaluation excluded).",
        "",
    ]
    for task, groups in per_task.items():
        meaning = table_meaning(groups)
        metric = meaning.main_metric
        lines += [f"## {task}", "", f"Main metric: **{metric}** ({meaning.phrase})."]
        majority = {r.majority_rate for g in groups for r in g.runs if r.majority_rate is not None}
        if len(majority) == 1:
            lines[-1] += f" Majority-class rate of the evaluation set: {majority.pop():.4f}."
        note = eval_set_note(groups)
        lines += ["", *([note, ""] if note else []), *task_table(task, metric, groups), ""]
        if images.get(task) is not None:
            lines += [f"![{task}: {metric} vs trainable parameters]({images[task].name})", ""]  # type: ignore[union-attr]
    lines += trials or []
    lines += ["## Failed or incomplete runs", ""]
    if bad:
        lines += ["| run dir | task | projection | model | seed | status | error |", "|---|---|---|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: str(r.run_dir)):
            error = (r.error or "").replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| `{r.run_dir}` | {r.task} | {r.projection} | {r.model} | {r.seed} | {r.status} | {error} |")
    else:
        lines.append("None: every run found completed.")
    lines += [
        "",
        "## Commands",
        "",
        "Each row, as one command (the job overrides its runs share; `seed=` lists the seeds found):",
        "",
    ]
    for task, groups in per_task.items():
        for g in groups:
            lines.append(f"- {task} / {g.model} / {g.label}: `{g.command()}`")
    launched = sorted({r.command for gs in per_task.values() for g in gs for r in g.runs if r.command})
    if launched:
        lines += ["", "As launched (each job's command, recorded in its metrics.json):", ""]
        lines += [f"- `{c}`" for c in launched]
    return "\n".join(lines) + "\n"


def compare(roots: list[str | Path], out: str | Path = "results", name: str = "compare") -> dict[str, Any]:
    """Read every run below ``roots``; write <out>/<name>.md and one <out>/<name>_<task>.png per task."""
    out = Path(out)
    runs = [load_run(d) for d in find_run_dirs(roots)]
    per_task, bad = group_runs(runs)
    images = {
        task: plot_task(task, table_meaning(groups).main_metric, groups, out / f"{name}_{slug(task)}.png")
        for task, groups in per_task.items()
    }
    text = render(per_task, bad, images, name, [str(r) for r in roots], search_summary(runs))

    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    table = atomic_write(out / f"{name}.md", write)
    return {
        "table": table,
        "images": {t: p for t, p in images.items() if p},
        "groups": per_task,
        "failed": bad,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lorazoo-compare",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Rows: one per setting actually run (resolved, fitted config minus the seed); see the module doc.",
    )
    parser.add_argument("dirs", nargs="+", help="sweep or run directories (searched recursively)")
    parser.add_argument("--out", default="results", help="output folder (default: results)")
    parser.add_argument("--name", default="compare", help="file name prefix (default: compare)")
    parser.add_argument("--curves", metavar="PNG", help="also plot every run's curves.jsonl (loss and dev scores)")
    args = parser.parse_args(argv)
    try:
        result = compare(args.dirs, args.out, args.name)
    except (FileNotFoundError, LoraZooError) as exc:
        parser.error(str(exc))
    groups = [g for gs in result["groups"].values() for g in gs]
    n_ok = sum(len(g.runs) for g in groups)
    dups = sum(len(g.duplicates) for g in groups)
    print(
        f"{n_ok} completed runs in {len(groups)} rows"
        + (f" ({dups} repeated seed(s) counted once, see the dup column)" if dups else "")
        + f", {len(result['failed'])} failed/incomplete -> {result['table']}"
        + "".join(f"\n  {p}" for p in result["images"].values())
    )
    if args.curves:
        from lorazoo.curves import plot_curves

        drawn = plot_curves(curve_settings(result["groups"], result["failed"]), args.curves)
        print(f"curves -> {drawn}" if drawn else "curves: no run has a curves.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
