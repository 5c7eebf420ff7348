"""The study's two reporting protocols, paired bootstrap differences and its results file, on constructed run
records (lorazoo.study.stats, lorazoo.study.report): numbers checked against hand computations."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from lorazoo.study import report, stats


def write_run(
    root: Path, task: str, projection: str, seed: int, final: float, evals: list[float], metric: str = "accuracy"
) -> Path:
    run = root / task.replace("/", "_") / projection / "final" / f"seed_{seed}"
    run.mkdir(parents=True)
    overrides = [f"experiment=cpu_study_{projection}", f"task={task}", "optimizer.lr=0.004", f"seed={seed}"]
    record = {
        "status": "completed",
        "task": task,
        "projection": projection,
        "model": "minilm",
        "seed": seed,
        "trainable": {"lora": 73728, "unilora": 4096, "vera": 7680}[projection],
        "overrides": overrides,
        metric: final,
        "metrics": {"loss": 0.5, metric: final},
        "main_metric": metric,
        "greater_is_better": metric != "loss",
    }
    (run / "metrics.json").write_text(json.dumps(record))
    rows = [{"step": 10 * (k + 1), "eval_loss": 0.5, f"eval_{metric}": v} for k, v in enumerate(evals)]
    rows.insert(1, {"step": 15, "loss": 0.6, "lr": 1e-3, "steps": 5})  # a training row between evaluations
    (run / "curves.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


FINAL = {0: 0.80, 1: 0.84, 2: 0.78, 3: 0.90, 4: 0.70}
EVALS = {0: [0.75, 0.82, 0.80], 1: [0.86, 0.84, 0.84], 2: [0.70, 0.78, 0.78], 3: [0.88, 0.91, 0.90], 4: [0.7, 0.7, 0.7]}


def test_both_protocols_from_constructed_records(tmp_path: Path):
    for seed, final in FINAL.items():
        write_run(tmp_path, "glue/sst2", "lora", seed, final, EVALS[seed])
    (method,) = report.collect(tmp_path)[0]
    p = method.protocols()
    assert p is not None and p.n == 5
    assert p.final_mean == pytest.approx(statistics.fmean(FINAL.values()))
    assert p.final_sd == pytest.approx(statistics.stdev(FINAL.values()))
    best = [max(EVALS[s]) for s in sorted(FINAL)]  # 0.82, 0.86, 0.78, 0.91, 0.70
    assert p.best_median == pytest.approx(statistics.median(best)) == pytest.approx(0.82)
    assert p.inflation == pytest.approx(0.82 - statistics.fmean(FINAL.values()))


def test_protocols_for_a_lower_is_better_metric_take_the_minimum(tmp_path: Path):
    for seed, (final, evals) in enumerate([(0.5, [0.7, 0.4, 0.5]), (0.6, [0.6, 0.65, 0.6]), (0.3, [0.35, 0.3])]):
        write_run(tmp_path, "text/generate", "lora", seed, final, evals, metric="loss")
    (method,) = report.collect(tmp_path)[0]
    p = method.protocols()
    assert p is not None and p.final_mean == pytest.approx(statistics.fmean([0.5, 0.6, 0.3]))
    assert p.best_median == pytest.approx(statistics.median([0.4, 0.6, 0.3]))  # each seed's lowest loss
    assert p.inflation is not None and p.inflation < 0  # the best step only ever looks better (lower)


def test_best_step_never_below_the_final_score():
    """A seed whose periodic evaluations all lie below its final score keeps the final one as its best."""
    p = stats.protocols({0: 0.9, 1: 0.8}, {0: 0.5, 1: 0.85})
    assert p is not None and p.best_median == pytest.approx(statistics.median([0.9, 0.85]))
    assert stats.protocols({}, {}) is None


def plain_bootstrap(diffs: list[float]) -> tuple[float, float]:
    """The paired bootstrap rebuilt with numpy alone: resample seeds, mean, 2.5/97.5 percentiles."""
    gen = np.random.default_rng(0)
    d = np.asarray(diffs)
    means = d[gen.integers(0, len(d), size=(stats.RESAMPLES, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def test_paired_bootstrap_on_constructed_data():
    a = {0: 0.85, 1: 0.86, 2: 0.84, 3: 0.87, 4: 0.85, 9: 0.99}  # seed 9 has no partner: not used
    b = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.80, 4: 0.81}
    pair = stats.paired_difference("a", "b", a, b)
    diffs = [a[s] - b[s] for s in range(5)]
    assert pair is not None and pair.seeds == (0, 1, 2, 3, 4)
    assert pair.mean == pytest.approx(statistics.fmean(diffs))
    assert (pair.low, pair.high) == pytest.approx(plain_bootstrap(diffs))
    assert pair.low <= pair.mean <= pair.high and pair.resolved
    noisy = stats.paired_difference("a", "b", {0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.75, 1: 0.78, 2: 0.85})
    assert noisy is not None and noisy.low < 0 < noisy.high and not noisy.resolved
    assert stats.paired_difference("a", "b", {0: 0.8}, {0: 0.7, 1: 0.6}) is None  # one shared seed
    worse = stats.paired_difference("b", "a", b, a)
    assert worse is not None and worse.resolved and worse.high < 0


def test_paired_t_interval_by_hand_and_a_gap_only_the_bootstrap_would_call_resolved():
    diffs = [0.001, 0.002, 0.003, 0.004, 0.05]  # one seed far out: every resample stays > 0, the t interval not
    a = dict(enumerate(diffs))
    b = dict.fromkeys(range(5), 0.0)
    pair = stats.paired_difference("a", "b", a, b)
    half = 2.7764451051977987 * statistics.stdev(diffs) / 5**0.5  # t(0.975, 4), from a t table
    assert pair is not None and (pair.t_low, pair.t_high) == pytest.approx((0.012 - half, 0.012 + half))
    assert pair.low > 0 and pair.t_low < 0 < pair.t_high
    assert not pair.resolved  # the bootstrap alone would call it; the t interval does not


def test_results_file_rows_commands_edges_gaps_and_plots(tmp_path: Path):
    runs, md = tmp_path / "runs", tmp_path / "results" / "RESULTS.md"
    for seed in range(3):
        write_run(runs, "glue/sst2", "lora", seed, 0.85 + 0.01 * seed, [0.8, 0.86])
        write_run(runs, "glue/sst2", "unilora", seed, 0.80 + 0.01 * seed, [0.8, 0.81])
    write_run(runs, "glue/sst2", "vera", 0, 0.7, [0.7])
    command = "lorazoo-fair --task glue/sst2 --search halving --budget 480 --projections lora"
    tuning = {"best_params": {"optimizer.lr": "0.004"}, "best_multiplier": 10.0, "edge": None, "command": command}
    (runs / "glue_sst2" / "lora" / "final" / "tuning.json").write_text(json.dumps(tuning))
    edge = {**tuning, "edge": "high", "command": command.replace("lora", "unilora")}
    (runs / "glue_sst2" / "unilora" / "final" / "tuning.json").write_text(json.dumps(edge))
    text = report.render(runs, md, planned=15)
    assert md.read_text() == text
    assert "partial: 7 of 15 final runs" in text
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].strip("| "), line)  # the method table comes first
    assert f"`{command}`" in rows["lora"] and "73,728" in rows["lora"] and "10× paper" in rows["lora"]
    assert "EDGE (high)" in rows["unilora"] and "EDGE" not in rows["lora"]
    assert "| no |" in rows["lora"]  # not at an edge: said, not left to the absence of a flag
    assert "`python run.py -m experiment=cpu_study_vera task=glue/sst2 optimizer.lr=0.004 seed=0`" in rows["vera"]
    gap = next(
        line for line in text.splitlines() if line.startswith("| lora | unilora |") or "| unilora | lora |" in line
    )
    assert "+0.0500" in gap or "-0.0500" in gap
    assert gap.rstrip().endswith("| yes |")  # a constant 0.05 gap over 3 seeds is resolved
    assert (md.parent / "figures" / "glue_sst2_scores.png").is_file()
    assert (md.parent / "figures" / "glue_sst2_curves.png").is_file()
    assert "](figures/glue_sst2_scores.png)" in text
    assert "partial" not in report.render(runs, md, planned=7)


def test_a_study_still_searching_shows_its_rungs(tmp_path: Path):
    """Before any seed run completes, the results file says so and lists each method's rung runs."""
    rung = tmp_path / "runs" / "glue_sst2" / "lora" / "search" / "steps_60"
    for name, status, cpu in (("lr_a", "completed", 1800.0), ("lr_b", "completed", 900.0), ("lr_c", "failed", 99.0)):
        (rung / name).mkdir(parents=True)
        (rung / name / "metrics.json").write_text(json.dumps({"status": status, "cpu_time_s": cpu}))
    (rung / "lr_d").mkdir()  # still running: no record yet
    text = report.render(tmp_path / "runs", tmp_path / "RESULTS.md", planned=72)
    assert "partial: 0 of 72 final runs" in text and "No completed final run" in text
    assert "| glue_sst2 | lora | searching | 60 steps: 2/4 | 0.75 |" in text  # (1800 + 900) s, completed only
    assert "Total so far: **0.75 CPU-h**" in text


def test_completed_records_leave_out_weights_checkpoints_and_unfinished_runs(tmp_path: Path):
    done = write_run(tmp_path, "glue/sst2", "lora", 0, 0.8, [0.8])
    for weights in ("adapter/adapter.safetensors", "checkpoints/checkpoint-60/optimizer.pt", ".lorazoo.lock"):
        (done / weights).parent.mkdir(parents=True, exist_ok=True)
        (done / weights).write_text("x")
    running = tmp_path / "glue_sst2" / "lora" / "final" / "seed_1"
    running.mkdir()
    (running / "curves.jsonl").write_text("")
    (done.parent / "tuning.json").write_text("{}")
    files = {str(f.relative_to(tmp_path)) for f in report.completed_records(tmp_path)}
    assert files == {
        "glue_sst2/lora/final/tuning.json",
        "glue_sst2/lora/final/seed_0/metrics.json",
        "glue_sst2/lora/final/seed_0/curves.jsonl",
    }


def test_completed_records_wait_for_a_run_that_still_holds_its_lock(tmp_path: Path):
    """metrics.json says completed a moment before the run's last logs are written: while the run's lock is
    held, its files are not listed (a commit then would record files that change after it)."""
    import fcntl
    import os

    done = write_run(tmp_path, "glue/sst2", "lora", 0, 0.8, [0.8])
    (done / ".lorazoo.lock").write_text("pid 1 on here\n")
    fd = os.open(done / ".lorazoo.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as claim() holds it for the job's whole life
        assert report.completed_records(tmp_path) == []
    finally:
        os.close(fd)
    assert len(report.completed_records(tmp_path)) == 2  # released (or left by a killed run): listed


def test_spread_names_best_worst_range_and_who_is_within_one_and_two_points(tmp_path: Path):
    runs, md = tmp_path / "runs", tmp_path / "RESULTS.md"
    for seed in range(2):
        write_run(runs, "glue/sst2", "lora", seed, 0.82 + 0.002 * seed, [0.8])  # mean 0.821
        write_run(runs, "glue/sst2", "unilora", seed, 0.805, [0.8])
        write_run(runs, "glue/sst2", "vera", seed, 0.79 + 0.01 * seed, [0.7])  # mean 0.795
    write_run(runs, "glue/stsb", "lora", 0, 0.99, [0.9])  # another task: its own section
    text = report.render(runs, md)
    (line,) = [t for t in text.splitlines() if t.startswith("Spread of the tuned final means")]
    assert "over the 3 methods with 2 seeds" in line and "Left out" not in line
    assert "best **lora** 0.8210" in line and "worst **vera** 0.7950" in line
    assert "range **0.0260**" in line and f"({0.026 / 0.821:.1%} of the best)" in line
    assert "Within 0.01 of the best: lora;" in line and "within 0.02: lora, unilora." in line


def test_spread_of_a_lower_is_better_metric_keeps_the_reported_sign():
    s = stats.spread({"a": -0.30, "b": -0.35, "c": -0.31})  # losses 0.30, 0.35, 0.31 turned to higher-is-better
    assert s is not None and (s.best, s.worst) == ("a", "b")
    assert s.points == pytest.approx(0.05) and s.within({"a": -0.30, "b": -0.35, "c": -0.31}, 0.01) == ["a", "c"]
    assert stats.spread({"a": 0.5}) is None


def test_spread_leaves_out_a_method_whose_seeds_are_still_running(tmp_path: Path):
    """A one-seed mean beside five-seed means is no fair comparison: it waits until its seeds finish."""
    runs = tmp_path / "runs"
    for seed in range(3):
        write_run(runs, "glue/sst2", "lora", seed, 0.82, [0.8])
        write_run(runs, "glue/sst2", "vera", seed, 0.80, [0.8])
    write_run(runs, "glue/sst2", "unilora", 0, 0.95, [0.9])  # a lucky first seed
    text = report.render(runs, tmp_path / "RESULTS.md")
    (line,) = [t for t in text.splitlines() if t.startswith("Spread of the tuned final means")]
    assert "over the 2 methods with 3 seeds: best **lora**" in line
    assert line.endswith("Left out until 3 seeds finish: unilora.")


def test_against_an_earlier_study_sets_each_shared_method_beside_its_old_row(tmp_path: Path):
    old, new, md = tmp_path / "old", tmp_path / "new", tmp_path / "RESULTS.md"
    for seed in range(3):
        for projection, score in (("lora", 0.80), ("unilora", 0.70 + 0.02 * seed)):  # unilora 0.72 ± 0.02
            run = write_run(old, "glue/sst2", projection, seed, score, [score])
            record = json.loads((run / "metrics.json").read_text())
            (run / "metrics.json").write_text(json.dumps({**record, "steps": 60, "eval_examples": 200}))
        write_run(new, "glue/sst2", "lora", seed, 0.82, [0.8])
        write_run(new, "glue/sst2", "unilora", seed, 0.81, [0.8])
        write_run(new, "glue/sst2", "vera", seed, 0.79, [0.8])  # not in the earlier study: no row
    tuning = {"best_params": {"optimizer.lr": 0.005592784563597617}}  # a float lr is shown to 3 digits
    (old / "glue_sst2" / "lora" / "final" / "tuning.json").write_text(json.dumps(tuning))
    text = report.render(new, md, before=old)
    section = text.split("### glue/sst2 against the earlier study")[1]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert set(rows) == {"projection", "lora", "unilora"}
    assert rows["lora"] == (
        "| lora | 60 steps, 200 dev | 3 | lr 0.00559 | 0.8000 ± 0.0000 | 3 | 0.8200 ± 0.0000 | +0.0200 |"
    )
    assert rows["unilora"].endswith(f"| 0.7200 ± 0.0200 | 3 | 0.8100 ± 0.0000 | {0.81 - 0.72:+.4f} |")
    assert "over these 2 methods: earlier 0.0800 (lora − unilora); now 0.0100 (lora − unilora)." in section
    assert "--before" in text.splitlines()[2]  # the regenerate command names the earlier study


def test_report_refuses_a_before_that_is_not_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit):
        report.main([str(tmp_path / "runs"), "--md", str(tmp_path / "R.md"), "--before", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert "--before" in err and "nope" in err and "not a directory" in err


def test_a_final_dir_holding_two_settings_stops_the_report(tmp_path: Path):
    """A seed of an older search's lr left in a method's final dir would be averaged into its row: refused,
    naming the dir and the key that differs."""
    runs, md = tmp_path / "runs", tmp_path / "RESULTS.md"
    write_run(runs, "glue/sst2", "lora", 0, 0.85, [0.85])
    stray = write_run(runs, "glue/sst2", "lora", 1, 0.60, [0.60])
    record = json.loads((stray / "metrics.json").read_text())
    record["overrides"] = [o.replace("optimizer.lr=0.004", "optimizer.lr=0.04") for o in record["overrides"]]
    (stray / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit) as stop:
        report.main([str(runs), "--md", str(md)])
    message = str(stop.value)
    assert message.startswith("error: ") and "lora/final" in message and "optimizer.lr" in message
    assert "\n" not in message and not md.exists()
