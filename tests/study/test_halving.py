"""Successive-halving bookkeeping of the study's lr search (lorazoo.study.halving), its resume from the run dirs
on disk, and widening past an edge; lorazoo-fair --search halving's commands."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lorazoo.study import fair, halving

PLAN = halving.Plan(budget=400, rungs=3, eta=2, max_widen=2)


def scores_peaking_at(peak: int):
    """An lr response with its optimum at grid index ``peak``: larger is better."""
    return lambda i: 0.9 - 0.01 * (i - peak) ** 2


def replay(plan: halving.Plan, score, first=None, fail=()) -> tuple[halving.Search, list[tuple[int, list[int]]]]:
    """Run the search to the end, feeding ``score(i)`` (None for trials in ``fail``); the launches it asked for."""
    done: halving.Done = {}
    launches = []
    first = first or halving.first_grid()
    while True:
        search, todo = halving.advance(plan, first, done)
        if todo is None:
            return search, launches
        launches.append(todo)
        steps, indices = todo
        assert not any((steps, i) in done for i in indices)  # nothing finished is asked for again
        done.update({(steps, i): (None if i in fail else score(i)) for i in indices})


def test_rungs_halve_the_trials_and_double_the_steps():
    search, launches = replay(PLAN, scores_peaking_at(1))
    assert [(s, len(ix)) for s, ix in launches] == [(100, 8), (200, 4), (400, 2)]
    assert launches[1][1] == [-1, 0, 1, 2]  # the best half of rung 0 (tie at ±1 around the peak broken by index)
    assert search.winner() == 1 and search.edge() is None and search.widenings == 0
    assert halving.first_grid() == list(range(-2, 6))
    assert math.isclose(halving.multiplier(-2), 0.1) and math.isclose(halving.multiplier(5), 100.0)


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resume_from_any_point_takes_the_same_decisions(stop_after: int):
    """A study killed after ``stop_after`` launches and replayed from what finished asks only for the rest."""
    score = scores_peaking_at(2)
    full, launches = replay(PLAN, score)
    done = {(s, i): score(i) for s, ix in launches[:stop_after] for i in ix}
    half = {k: v for k, v in list(done.items())[: len(done) - 1]}  # the last run of the last launch was killed
    _, todo = halving.advance(PLAN, halving.first_grid(), half)
    steps, missing = launches[stop_after - 1][0], [launches[stop_after - 1][1][-1]]
    assert todo == (steps, missing)
    resumed, rest = replay(PLAN, score)
    assert resumed.winner() == full.winner() and rest == launches


def test_a_failed_trial_is_not_rerun_nor_promoted():
    search, launches = replay(PLAN, scores_peaking_at(1), fail={1})
    assert all(1 not in ix for _, ix in launches[1:])
    assert search.winner() in (0, 2)
    assert halving.promoted(halving.Rung(10, {0: None, 1: None}), 2) == []


@pytest.mark.parametrize(("peak", "edge"), [(9, "high"), (-6, "low")])
def test_best_at_an_edge_widens_the_grid_then_is_flagged(peak: int, edge: str):
    """The optimum beyond the range: the grid grows by 2 points past that edge, twice, and the winner is still
    at the edge, so the report flags it; every point added is a new rung-0 run, the old ones are reused."""
    search, launches = replay(PLAN, scores_peaking_at(peak))
    rung0 = [ix for s, ix in launches if s == 100]
    assert rung0[0] == list(range(-2, 6))
    added = [-4, -3] if edge == "low" else [6, 7]
    assert rung0[1] == added and search.widenings == 2
    assert len(search.grid) == 12 and search.edge() == edge
    assert search.winner() == (max(search.grid) if edge == "high" else min(search.grid))


def test_widening_stops_once_the_best_is_inside():
    search, launches = replay(PLAN, scores_peaking_at(6))  # just past the first grid: one widening finds it
    assert search.widenings == 1 and search.winner() == 6 and search.edge() is None
    assert [ix for s, ix in launches if s == 100] == [list(range(-2, 6)), [6, 7]]


@pytest.mark.parametrize(
    ("budget", "rungs", "eta", "needle"),
    [(90, 3, 2, "not divisible by eta"), (0, 3, 2, "budget >= 1"), (64, 3, 1, "eta >= 2"), (64, 0, 2, "rungs >= 1")],
)
def test_bad_plans_are_one_line_errors(budget: int, rungs: int, eta: int, needle: str):
    with pytest.raises(halving.HalvingError, match=needle) as error:
        halving.Plan(budget, rungs, eta)
    assert "\n" not in str(error.value) and "valid:" in str(error.value)


# ----------------------------------------------------------------------------- lorazoo-fair --search halving
ARGS = ["--task", "tweets", "--search", "halving", "--budget", "40", "--seeds", "0,1"]


def commands(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ python run.py")]


def test_halving_dry_run_sweeps_rung0_around_the_paper_lr(tmp_path: Path, capsys):
    assert fair.main([*ARGS, "--projections", "lora", "--out", str(tmp_path), "--dry-run", "data_root=/d"]) == 0
    (line,) = commands(capsys)
    values = [float(v) for v in next(a for a in line.split() if a.startswith("optimizer.lr=")).split("=")[1].split(",")]
    assert len(values) == 8 and math.isclose(min(values), 4e-5) and math.isclose(max(values), 4e-2)
    assert "trainer.max_steps=10" in line.split() and "task.holdout_dev=200" in line.split()
    assert "data_root=/d" in line.split()


def test_halving_moves_group_lrs_together_one_job_per_trial(tmp_path: Path, capsys):
    fair.main([*ARGS, "--projections", "vblora", "--out", str(tmp_path), "--dry-run"])
    lines = commands(capsys)
    assert len(lines) == 8
    for line in lines:
        words = dict(w.split("=", 1) for w in line.split() if w.startswith("optimizer.groups."))
        bank, logits = float(words["optimizer.groups.bank.lr"]), float(words["optimizer.groups.logits.lr"])
        assert math.isclose(logits / bank, 10, rel_tol=1e-4)  # the paper's ratio kept


def write_trial(rung_dir: Path, name: str, overrides: list[str], score: float | None) -> None:
    run = rung_dir / name
    run.mkdir(parents=True)
    record = {"status": "failed", "overrides": overrides, "task": "tweets", "projection": "lora", "seed": 0}
    if score is not None:
        record.update(status="completed", accuracy=score, metrics={"accuracy": score}, main_metric="accuracy")
        record["greater_is_better"] = True
    (run / "metrics.json").write_text(json.dumps(record))


def rung_job(steps: int, lr: str, holdout: int = 200, extra: tuple[str, ...] = ()) -> list[str]:
    """The overrides Hydra records for a rung run of ARGS (as lorazoo-fair passes them, resume spelt by Hydra)."""
    return [
        "projection=lora",
        "task=tweets",
        *extra,
        f"trainer.max_steps={steps}",
        f"task.holdout_dev={holdout}",
        "trainer.resume=True",
        f"optimizer.lr={lr}",
    ]


def write_rung0(out: Path, holdout: int = 200, extra: tuple[str, ...] = ()) -> None:
    """Rung 0 (10 steps) finished on disk, trial 0 failed, the rest scored around a peak at index 1."""
    rung = out / "tweets" / "lora" / "search" / "steps_10"
    score = scores_peaking_at(1)
    for i in halving.first_grid():
        lr = fair.trial_lrs("lora", i)["optimizer.lr"]
        write_trial(rung, f"lr_{lr}", rung_job(10, lr, holdout, extra), None if i == 0 else score(i))


def test_halving_resumes_from_the_rung_dirs_on_disk(tmp_path: Path, capsys):
    """Rung 0 finished on disk (one trial failed): a rerun launches rung 1 with the best half only."""
    write_rung0(tmp_path)
    fair.main([*ARGS, "--projections", "lora", "--out", str(tmp_path), "--dry-run"])
    (line,) = commands(capsys)
    swept = next(a for a in line.split() if a.startswith("optimizer.lr=")).split("=")[1].split(",")
    assert swept == [fair.trial_lrs("lora", i)["optimizer.lr"] for i in (-1, 1, 2, 3)]
    assert "trainer.max_steps=20" in line.split()


@pytest.mark.parametrize(
    ("holdout", "extra", "rerun_args"),
    [
        (300, (), []),  # the runs on disk scored another held-in split
        (200, ("task.max_train_samples=64",), []),  # they trained on another slice of train
        (200, (), ["task.max_train_samples=64"]),  # this command adds a setting those runs lacked
    ],
)
def test_rung_runs_of_another_setting_are_not_reused(tmp_path: Path, capsys, holdout, extra, rerun_args):
    """Same lrs, same rung steps, another experiment: rung 0 is run again, never taken from the other one."""
    write_rung0(tmp_path, holdout, extra)
    fair.main([*ARGS, "--projections", "lora", "--out", str(tmp_path), "--dry-run", *rerun_args])
    (line,) = commands(capsys)
    assert "trainer.max_steps=10" in line.split()
    assert len(next(a for a in line.split() if a.startswith("optimizer.lr=")).split(",")) == 8


def test_final_seeds_of_another_budget_are_not_counted_done(tmp_path: Path):
    """A seed that finished at 240 steps is not a seed of a 480-step final; the same job spelt by Hydra is."""
    final = tmp_path / "final"
    common = ["experiment=cpu_study_lora", "task=glue/stsb", "trainer.progress_bar=false"]
    for seed, steps in ((0, 240), (1, 480)):
        run = final / f"seed_{seed}"
        run.mkdir(parents=True)
        recorded = [
            *common[:2],
            "trainer.progress_bar=False",
            f"trainer.max_steps={steps}",
            "optimizer.lr=0.002",
            f"seed={seed}",
            "trainer.resume=True",
        ]
        (run / "metrics.json").write_text(json.dumps({"status": "completed", "seed": seed, "overrides": recorded}))
    wanted = [*common, "trainer.max_steps=480", "optimizer.lr=0.002"]
    assert fair.completed_seeds(final, wanted) == {1}
    # a value YAML cannot read (a prompt with colons) is compared as text, not an error
    assert fair.same_job(["task.prompt=Q: a: b", "seed=1"], ["task.prompt=Q: a: b"])
    assert not fair.same_job(["task.prompt=Q: a: b"], ["task.prompt=Q: a: c"])


def test_a_tie_with_a_trial_inside_is_not_an_edge():
    """Every trial at the same score (e.g. all at the majority rate): nothing says the optimum is outside."""
    search, launches = replay(PLAN, lambda i: 0.5)
    assert search.widenings == 0 and search.edge() is None
    assert [len(ix) for _, ix in launches] == [8, 4, 2]
