"""lorazoo.compare (scripts/compare.py, lorazoo-compare): rows keyed on what ran, the table's statistics, the
failed-run section, the Pareto front and its PNG, on fake run dirs and on one real tiny sweep."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import compose_config, run_config, run_py, tiny_job

from lorazoo import compare
from lorazoo.train.records.config_diff import flatten
from lorazoo.train.tasks.meaning import MetricMeaningError

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

ACCURACY = {("lora", 0): 0.80, ("lora", 1): 0.90, ("unilora", 0): 0.70, ("unilora", 1): 0.74}
TRAINABLE = {"lora": 73728, "unilora": 4096}


def fake_run(root: Path, name: str, projection: str, seed: int, record: dict | None) -> Path:
    """A run dir as the runner leaves it: .hydra/config.yaml + overrides.yaml, and metrics.json when given."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = {
        "seed": seed,
        "projection": {"name": projection},
        "task": {"name": "tweets"},
        "model": {"name": "minilm"},
        "trainer": {"max_steps": 20},
    }
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    identity = {**flatten(config), "lorazoo.generator_version": 1}
    (run / "lorazoo_run.json").write_text(json.dumps({"fingerprint": "f", "identity": identity}))
    overrides = [f"projection={projection}", f"seed={seed}", "trainer.max_steps=20", f"hydra.run.dir={run}"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if record is not None:
        base = {
            "task": "tweets",
            "projection": projection,
            "model": "minilm",
            "seed": seed,
            "overrides": overrides,
            "command": "python run.py -m projection=lora,unilora seed=0,1",
            "majority_rate": 0.415,
        }
        (run / "metrics.json").write_text(json.dumps({**base, **record}))
    return run


def completed(projection: str, seed: int) -> dict:
    acc = ACCURACY[(projection, seed)]
    return {
        "status": "completed",
        "accuracy": acc,
        "metrics": {"accuracy": acc, "loss": 1.0 - acc},
        "trainable": TRAINABLE[projection],
        "D": 73728 if projection == "lora" else 36864,
        "wall_time_s": 10.0 + seed,
        "steps": 20,
    }


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape[0] > 100  # decodes, not just a header


def row(text: str, label: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    assert len(lines) == 1, text
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def test_fake_runs_table_failed_section_and_png(tmp_path: Path):
    sweep = tmp_path / "sweep"
    for i, (projection, seed) in enumerate(ACCURACY):
        fake_run(sweep, f"{i}_{projection}_{seed}", projection, seed, completed(projection, seed))
    fake_run(sweep, "4_unilora_2", "unilora", 2, {"status": "failed", "error": "NonFiniteLossError: loss is nan"})
    fake_run(sweep, "5_lora_2", "lora", 2, None)  # started, never wrote metrics.json
    result = compare.compare([sweep], out=tmp_path / "out", name="study")
    text = result["table"].read_text()

    for projection in ("lora", "unilora"):
        cells = row(text, projection)
        accs = [ACCURACY[(projection, s)] for s in (0, 1)]
        assert cells[2] == "2"
        assert cells[3] == f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"
        assert cells[6] == f"{TRAINABLE[projection]:,}" and cells[8] == "10.5" and cells[10] == "20"
        assert cells[4] == "[{:.4f}, {:.4f}]".format(*compare.bootstrap_interval(accs))
    assert row(text, "lora")[3] == "0.8500 ± 0.0707" and row(text, "unilora")[3] == "0.7200 ± 0.0283"
    # sorted by the main metric, best first; the group's command lists its seeds
    assert text.index("| lora |") < text.index("| unilora |")
    assert "`python run.py -m projection=lora trainer.max_steps=20 seed=0,1`" in text
    failed = text.split("## Failed or incomplete runs")[1]
    assert "NonFiniteLossError: loss is nan" in failed and "4_unilora_2" in failed
    assert "5_lora_2" in failed and "missing metrics.json" in failed
    assert "0.4150" in text  # the majority-class baseline is shown
    assert set(result["images"]) == {"tweets"}
    assert result["images"]["tweets"] == tmp_path / "out" / "study_tweets.png"
    assert_png(result["images"]["tweets"])
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temporaries

    # the CLI writes the same files
    assert compare.main([str(sweep), "--out", str(tmp_path / "cli"), "--name", "x"]) == 0
    assert row((tmp_path / "cli" / "x.md").read_text(), "lora")[3] == "0.8500 ± 0.0707"
    assert_png(tmp_path / "cli" / "x_tweets.png")


def _rewrite(run: Path, record: dict | None = None, identity: dict | None = None) -> None:
    """Change a fake run's metrics.json / lorazoo_run.json identity in place (merged into what is there)."""
    for name, change, key in (("metrics.json", record, None), ("lorazoo_run.json", identity, "identity")):
        if change:
            data = json.loads((run / name).read_text())
            (data[key] if key else data).update(change)
            (run / name).write_text(json.dumps(data))


def test_missing_dir_fails(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        compare.compare([tmp_path / "nope"], out=tmp_path / "out")


# Each way two seed-0 and seed-1 runs of one projection can differ in what ran, while their command-line
# overrides are word for word the same: (metrics.json change, lorazoo_run.json identity change).
DIFFERENT_SETTINGS = {
    "trainer.max_steps": ({}, {"trainer.max_steps": 40}),
    "optimizer.lr": ({}, {"optimizer.lr": 0.01}),
    "projection.rank": ({}, {"projection.rank": 16}),
    "fitted d": ({"fitted_to_model": {"projection.kwargs.d": {"from": 23040, "to": 5760, "why": "fit"}}}, {}),
    "data content": ({"data_sha256": {"/data/train.tsv": "ab" * 32}}, {}),
    "eval subset": ({}, {"task.max_eval_samples": 100}),
}


@pytest.mark.parametrize("change", sorted(DIFFERENT_SETTINGS))
def test_runs_that_differ_in_what_ran_are_separate_rows(tmp_path: Path, change: str):
    """Keyed on the resolved, fitted config (minus the seed) and the data, never on the override text."""
    fake_run(tmp_path / "a", "r0", "lora", 0, completed("lora", 0))
    other = fake_run(tmp_path / "b", "r0", "lora", 1, completed("lora", 1))
    record, identity = DIFFERENT_SETTINGS[change]
    _rewrite(other, record, identity)
    result = compare.compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out")
    groups = result["groups"]["tweets"]
    assert [len(g.runs) for g in groups] == [1, 1]
    text = result["table"].read_text()
    assert "| lora #1 (" in text and "| lora #2 (" in text
    if change in ("trainer.max_steps", "optimizer.lr", "projection.rank"):
        assert f"{change}=" in text  # the label names the key the rows differ in
    if change == "eval subset":
        assert "Not comparable across evaluation sets" in text


def test_runs_differing_in_paths_logging_or_seed_only_pool(tmp_path: Path):
    fake_run(tmp_path / "a", "r0", "lora", 0, completed("lora", 0))
    other = fake_run(tmp_path / "b", "r0", "lora", 1, completed("lora", 1))
    _rewrite(
        other,
        {"overrides": ["projection=lora", "seed=1", "trainer.max_steps=20", "task.data_dir=/x"]},
        {"task.data_dir": "/x", "logger.name": "none", "trainer.progress_bar": False},
    )
    for run, folder in ((other, "/x"), (tmp_path / "a" / "r0", "/y")):  # the same file content in two places
        _rewrite(run, {"data_sha256": {f"{folder}/train.tsv": "cd" * 32}})
    groups = compare.compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out")["groups"]["tweets"]
    assert [len(g.runs) for g in groups] == [2]
    assert "Not comparable" not in (tmp_path / "out" / "compare.md").read_text()


@pytest.mark.parametrize("same_result", [True, False])
def test_repeated_seed_counts_once_and_is_flagged(tmp_path: Path, same_result: bool):
    first = fake_run(tmp_path / "a", "r0", "lora", 0, completed("lora", 0))
    again = fake_run(tmp_path / "b", "r0", "lora", 0, completed("lora", 0))
    if not same_result:
        _rewrite(again, {"accuracy": 0.5, "metrics": {"accuracy": 0.5}})
    result = compare.compare([tmp_path / "a", tmp_path / "b"], out=tmp_path / "out")
    (group,) = result["groups"]["tweets"]
    assert [r.run_dir for r in group.runs] == [first] and [r.run_dir for r in group.duplicates] == [again]
    cells = row(result["table"].read_text(), "lora")
    assert cells[2] == "1" and cells[3] == f"{ACCURACY[('lora', 0)]:.4f}"  # n = 1, not 2 runs at ± 0
    assert cells[-1] == f"seed 0 ×2 ({'same result' if same_result else 'results differ'})"
    printed = subprocess.run(
        [sys.executable, "-m", "lorazoo.compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0 and "1 repeated seed(s) counted once" in printed.stdout


TASK_MEANINGS = [  # an older record (no main_metric/greater_is_better): the task rebuilt from its config decides
    ("tweets", "accuracy", True),
    ("glue/cola", "matthews_correlation", True),
    ("glue/stsb", "pearson", True),
    ("math/gsm8k", "exact_match", True),
    ("instruct/alpaca", "perplexity", False),
    ("text/generate", "perplexity", False),
]


def scored_runs(root: Path, task: str, metric: str, scores: dict[str, float], meaning: dict | None = None) -> None:
    """One fake completed run per projection of ``task``, scored ``metric``; ``meaning``: the record's keys."""
    for projection, score in scores.items():
        run = fake_run(root, projection, projection, 0, completed("lora", 0))
        record = {"task": task, "projection": projection, metric: score, "metrics": {metric: score, "loss": 1.0}}
        _rewrite(run, {**record, **(meaning or {})}, identity={"task.name": task})
        if meaning is None:
            for gone in ("main_metric", "greater_is_better"):
                assert gone not in json.loads((run / "metrics.json").read_text())


SCORES = {"lora": 0.9, "vera": 0.6, "unilora": 0.75}  # alphabetical order is neither direction's ranking


@pytest.mark.parametrize("task,metric,greater", TASK_MEANINGS)
def test_rows_of_an_older_record_sorted_by_its_tasks_declaration(tmp_path: Path, task: str, metric: str, greater):
    scored_runs(tmp_path, task, metric, SCORES)
    result = compare.compare([tmp_path], out=tmp_path / "out")
    best_first = sorted(SCORES, key=SCORES.get, reverse=greater)  # type: ignore[arg-type]
    assert [g.projection for g in result["groups"][task]] == best_first
    phrase = "higher is better" if greater else "lower is better"
    assert f"Main metric: **{metric}** ({phrase})." in result["table"].read_text()


@pytest.mark.parametrize("greater", [False, True])
def test_direction_is_read_from_metrics_json(tmp_path: Path, greater: bool):
    """A made-up metric name: only the record's greater_is_better can say which way is better (the task config,
    tweets, would say accuracy, higher first)."""
    meaning = {"main_metric": "word_error_rate", "greater_is_better": greater}
    scored_runs(tmp_path, "tweets", "word_error_rate", SCORES, meaning)
    result = compare.compare([tmp_path], out=tmp_path / "out")
    groups = result["groups"]["tweets"]
    assert [g.projection for g in groups] == sorted(SCORES, key=SCORES.get, reverse=greater)  # type: ignore[arg-type]
    text = result["table"].read_text()
    assert f"Main metric: **word_error_rate** ({'higher' if greater else 'lower'} is better)." in text
    assert row(text, groups[0].label)[3] == f"{min(SCORES.values()) if not greater else max(SCORES.values()):.4f}"
    assert_png(result["images"]["tweets"])


@pytest.mark.parametrize(
    "task,metric,stated",
    [
        ("instruct/alpaca", "perplexity", {}),  # an older record: the task declares perplexity, lower first
        ("tweets", "word_error_rate", {"main_metric": "word_error_rate", "greater_is_better": False}),
    ],
)
def test_lower_is_better_trials_pick_the_lowest(tmp_path: Path, task: str, metric: str, stated: dict):
    """lr-search trials ranked lower-first: the best held-in score is the lowest."""
    root = tmp_path / "fair" / "t" / "lora" / "search"
    for k, value in enumerate((12.0, 7.5, 9.0)):
        trial = fake_run(root, f"{k}_trial", "lora", 0, completed("lora", 0))
        record = {"task": task, metric: value, "metrics": {metric: value, "loss": 2.0}, **stated}
        overrides = ["projection=lora", f"optimizer.lr={k + 1}e-3", "task.holdout_dev=20"]
        _rewrite(trial, {**record, "overrides": overrides}, identity={"task.name": task})
    text = compare.compare([tmp_path / "fair"], out=tmp_path / "out")["table"].read_text()
    assert f"| {task} | lora | 3 | 3 | 7.5000 | `optimizer.lr=2e-3` |" in text


def test_one_task_ranked_by_two_metrics_gets_a_table_per_metric(tmp_path: Path):
    """text/classify runs as classification (accuracy) and as regression (pearson): never one ranking."""
    scored_runs(tmp_path / "a", "text/classify", "accuracy", {"lora": 0.8})
    scored_runs(tmp_path / "b", "text/classify", "pearson", {"vera": 0.5}, {"main_metric": "pearson", **HIGHER})
    groups = compare.compare([tmp_path], out=tmp_path / "out")["groups"]
    assert sorted(groups) == ["text/classify (accuracy)", "text/classify (pearson)"]


HIGHER = {"greater_is_better": True}


@pytest.mark.parametrize(
    "record,identity,message",
    [
        ({"greater_is_better": "no"}, None, "main_metric=None, greater_is_better='no' is not a metric meaning"),
        ({}, {"task.name": "tweets", "task.retired_key": 3}, "unknown key(s) ['retired_key']"),
        ({}, {"task.name": "no/such_task"}, "unknown task 'no/such_task'"),
    ],
)
def test_record_without_a_usable_meaning_is_a_one_line_error_naming_the_run(tmp_path, record, identity, message):
    run = fake_run(tmp_path, "old", "lora", 0, completed("lora", 0))
    _rewrite(run, record, identity)
    with pytest.raises(MetricMeaningError) as caught:
        compare.compare([tmp_path], out=tmp_path / "out")
    text = str(caught.value)
    assert text.startswith(f"{run / 'metrics.json'}: ") and message in text and "\n" not in text
    printed = subprocess.run(
        [sys.executable, "-m", "lorazoo.compare", str(tmp_path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 2 and message in printed.stderr and "Traceback" not in printed.stderr


def test_bootstrap_interval_is_scipys_percentile_interval():
    import numpy as np
    from scipy import stats

    values = [0.8, 0.9, 0.85, 0.7]
    low, high = compare.bootstrap_interval(values)
    assert low < statistics.fmean(values) < high and 0.7 <= low and high <= 0.9
    ref = stats.bootstrap((np.asarray(values),), np.mean, n_resamples=2000, method="percentile", rng=0)
    assert abs(low - ref.confidence_interval.low) < 0.03 and abs(high - ref.confidence_interval.high) < 0.03
    assert compare.bootstrap_interval([0.5]) is None and compare.bootstrap_interval([0.5, 0.5]) == (0.5, 0.5)


@pytest.mark.parametrize("lower", [False, True])
def test_pareto_front(lower: bool):
    # (params, metric): a point is on the front when no point with fewer-or-equal params has a better metric
    points = [(10.0, 0.5), (100.0, 0.7), (50.0, 0.6), (200.0, 0.65), (5.0, 0.4)]
    if lower:
        points = [(x, -y) for x, y in points]
    assert compare.pareto_front(points, lower_is_better=lower) == [4, 0, 2, 1]


def test_real_tiny_sweep(tmp_path: Path):
    # lora and vera: neither has a d that must fit the tiny model's D (unilora's default d = 23,040 does not)
    sweep = tmp_path / "sweep"
    job = tiny_job(32, 16, "task=tweets", "trainer.max_steps=2", "trainer.batch_size=8", projection="lora,vera")
    out = run_py("-m", *job, "projection.rank=4", "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    script = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "compare.py"),
            str(sweep),
            "--out",
            str(tmp_path / "results"),
            "--name",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr[-2000:]
    text = (tmp_path / "results" / "tiny.md").read_text()
    records = {
        (r["projection"], r["seed"]): r for r in map(json.loads, map(Path.read_text, sweep.rglob("metrics.json")))
    }
    assert len(records) == 4
    for (projection, seed), record in records.items():  # each job's own command, not the whole sweep's
        words = record["command"].split()
        assert f"projection={projection}" in words and f"seed={seed}" in words and "-m" not in words
        assert not any("," in w for w in words), record["command"]
    for projection in ("lora", "vera"):
        cells = row(text, projection)
        accs = [records[(projection, s)]["accuracy"] for s in (0, 1)]
        assert cells[2] == "2" and cells[3] == f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"
        assert cells[6] == f"{records[(projection, 0)]['trainable']:,}"
        assert float(cells[9]) > 0  # CPU seconds of training, recorded per run
    assert "None: every run found completed." in text
    assert_png(tmp_path / "results" / "tiny_tweets.png")


def test_fair_comparison_rows_are_marked_tuned_and_trials_kept_apart(tmp_path: Path):
    """scripts/fair_compare.py's layout: search/ trials (held-in split) and final/ seeds beside tuning.json."""
    root = tmp_path / "fair" / "tweets" / "lora"
    for k, lr in enumerate((1e-3, 4e-3)):
        trial = fake_run(root / "search", f"{k}_trial", "lora", 0, completed("lora", k))
        meta = json.loads((trial / "metrics.json").read_text())
        meta["overrides"] = ["projection=lora", f"optimizer.lr={lr}", "task.holdout_dev=200"]
        (trial / "metrics.json").write_text(json.dumps(meta))
    for seed in (0, 1):
        run = fake_run(root / "final", f"seed_{seed}", "lora", seed, completed("lora", seed))
        meta = json.loads((run / "metrics.json").read_text())
        meta["overrides"] = ["projection=lora", "optimizer.lr=0.004", f"seed={seed}"]
        (run / "metrics.json").write_text(json.dumps(meta))
    (root / "final" / "tuning.json").write_text(json.dumps({"best_params": {"optimizer.lr": 0.004}, "best_value": 0.9}))
    fake_run(tmp_path / "fair", "untuned", "unilora", 0, completed("unilora", 0))
    text = compare.compare([tmp_path / "fair"], out=tmp_path / "out", name="fair")["table"].read_text()
    tuned = row(text, "lora (tuned)")
    assert tuned[2] == "2" and tuned[3] == "0.8500 ± 0.0707" and tuned[-3] == "lr 0.004"  # dev-set seeds only
    assert row(text, "unilora")[-3] == "no"
    search = text.split("## lr search trials")[1].split("##")[0]
    assert "| tweets | lora | 2 | 2 | 0.9000 | `optimizer.lr=0.004` |" in search


def test_real_runs_grouped_by_what_ran(tmp_path: Path):
    """The acceptance case on real run dirs (in-process runs record no command-line overrides at all): runs
    that differ only in trainer.max_steps are two rows; two identical seed-0 runs are one row, flagged."""
    tiny = tiny_job(16, 8, "projection.rank=4", "trainer.batch_size=8")
    for name, steps in (("a", 1), ("b", 1), ("c", 2)):
        run_config(compose_config(*tiny, f"trainer.max_steps={steps}"), tmp_path / "runs" / name)
    result = compare.compare([tmp_path / "runs"], out=tmp_path / "out")
    groups = result["groups"]["tweets"]
    by_steps = {g.runs[0].steps: g for g in groups}
    assert len(groups) == 2 and set(by_steps) == {1, 2}
    assert len(by_steps[1].runs) == 1 and len(by_steps[1].duplicates) == 1 and by_steps[2].duplicates == []
    text = result["table"].read_text()
    assert "trainer.max_steps=1" in text and "trainer.max_steps=2" in text
    assert "seed 0 ×2 (same result)" in text  # the same setting and seed on one machine: bit-equal
