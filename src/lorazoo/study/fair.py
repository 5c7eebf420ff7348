"""Fair comparison of projections (``lorazoo-fair``, ``scripts/fair_compare.py``): the same lr-search budget
for each method, then the same seeds at each one's tuned lr.

    lorazoo-fair --task glue/sst2 --projections lora,vera,unilora --trials 6 --seeds 0,1,2 \\
        --out runs/fair [--experiment-prefix cpu_study_] [data_root=<dir> | task.data_dir=<dir>] [key=value ...]

Every ``key=value`` argument is a run.py override passed to every job (search and final), so local data is given
exactly as to run.py: ``data_root=../shared/data`` or ``task.data_dir=../shared/data/glue/SST-2``.

For every projection P, Hydra multiruns of ``python run.py`` (Hydra is the engine; this only sequences):
  1. search, scored on ``--holdout`` examples carved from *train* (``task.holdout_dev``), never the dev set:
     ``--search optuna`` (default): ``-m hydra/sweeper=lr_P hydra.sweeper.n_trials=T``, Optuna over P's lr
     group(s); <out>/<task>/<P>/search (optimization_results.yaml, one job dir per trial).
     ``--search halving``: successive halving over a log grid of ``--trials`` lrs around P's paper lr
     (lorazoo.study.halving; widened while the best sits at an edge); <out>/<task>/<P>/search/steps_<n>.
  2. final: the best trial's lrs, ``seed=S1,S2,...``, scored on the real dev set; <out>/<task>/<P>/final,
     with tuning.json beside the job dirs (best lrs, best held-in score, trials, edge) for lorazoo-compare.
Re-running the same command resumes: a finished search (or rung run) is not repeated, finished seeds are not
retrained (one job dir per seed, ``seed_<s>``), an interrupted run resumes from its last checkpoint. A finished
run counts only when it ran with exactly this command's overrides: another budget, holdout or setting is another
experiment, so give it another ``--out`` (the run dirs refuse to be overwritten by a different config).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lorazoo.compare import load_run
from lorazoo.files import atomic_write_json
from lorazoo.projections import get_projection_class, projection_names
from lorazoo.study import halving
from lorazoo.train.config.store import lr_keys

RUN_PY = Path(__file__).resolve().parents[3] / "run.py"  # the repository's entry point (src layout)


def engine() -> list[str]:
    """How a sweep is launched: the checkout's run.py, or the installed ``lorazoo.cli`` (the same main)."""
    return [sys.executable, str(RUN_PY)] if RUN_PY.is_file() else [sys.executable, "-m", "lorazoo.cli"]


def slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", task)


def run_py(args: list[str], dry_run: bool) -> None:
    """One ``python run.py -m ...``; a failed sweep stops the comparison with its exit code."""
    print("+ " + shlex.join(["python", "run.py", "-m", *args]), flush=True)
    if not dry_run:
        done = subprocess.run([*engine(), "-m", *args], check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: run.py exited {done.returncode}; rerun the same command to resume")


def phase(line: str) -> None:
    """Where the comparison is; each run.py sweep then prints one [k/n] line per finished trial or seed."""
    print(f"[fair_compare] {line}", flush=True)


def best_params(search_dir: Path) -> dict[str, Any] | None:
    results = search_dir / "optimization_results.yaml"
    return yaml.safe_load(results.read_text()) if results.is_file() else None


# Overrides that do not change what a finished job computed: resuming, and the seed (checked on its own).
NOT_THE_JOB = ("trainer.resume", "seed")


def override_value(text: str) -> Any:
    """An override's value read as YAML, so that ``False`` and ``false`` agree; text YAML cannot read stays text."""
    try:
        return yaml.safe_load(text) if text else text
    except yaml.YAMLError:
        return text


def job_settings(overrides: list[str]) -> dict[str, Any]:
    """``key=value`` overrides as {key: value}, without those that do not change the job."""
    settings = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+")
        if key not in NOT_THE_JOB and not key.startswith("hydra."):
            settings[key] = override_value(value)
    return settings


def same_job(recorded: list[str], wanted: list[str]) -> bool:
    """A finished run is reused only when it ran with exactly the overrides this command would pass: another
    budget, holdout, data setting or extra override is another experiment, never a done one."""
    return job_settings(recorded) == job_settings(wanted)


def completed_seeds(final_dir: Path, wanted: list[str]) -> set[int]:
    """Seeds whose final run completed with exactly these overrides (an older search's or budget's do not count)."""
    done = set()
    for path in final_dir.glob("*/metrics.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "completed" and same_job(record.get("overrides") or [], wanted):
            done.add(int(record["seed"]))
    return done


# ----------------------------------------------------------------------------- successive halving
def paper_lrs(projection: str) -> dict[str, float]:
    """The lr keys a search moves and their paper values (the projection file's ``paper``)."""
    paper = get_projection_class(projection).paper
    if paper is None:
        raise SystemExit(f"error: projection {projection!r} declares no paper setting; valid: {projection_names()}")
    return lr_keys(paper)


def trial_lrs(projection: str, index: int) -> dict[str, str]:
    """Override values of grid trial ``index`` (6 significant digits: the exact string is the trial's id)."""
    return {key: f"{lr * halving.multiplier(index):.6g}" for key, lr in paper_lrs(projection).items()}


def halving_done(projection: str, search_dir: Path, indices: set[int], common: list[str], holdout: int) -> halving.Done:
    """(steps, index) → oriented held-in score of each finished rung run (None: it failed); the trial is
    recognised by its overrides (its lrs, rung steps and this command's settings), so a renamed or moved dir
    is still found and a run of another setting is never taken for this one."""
    done: halving.Done = {}
    for metrics in sorted(search_dir.glob("steps_*/*/metrics.json")):
        run = load_run(metrics.parent)
        steps = int(metrics.parent.parent.name.removeprefix("steps_"))
        jobs = {i: [*common, *rung_budget(steps, holdout), *lr_overrides(trial_lrs(projection, i))] for i in indices}
        index = next((i for i, wanted in jobs.items() if same_job(run.overrides, wanted)), None)
        if index is None:
            continue
        if run.status == "completed" and run.meaning is not None:
            done[(steps, index)] = run.meaning.oriented(run.metrics[run.meaning.main_metric])
        elif run.status == "failed":
            done[(steps, index)] = None
    return done


def rung_budget(steps: int, holdout: int) -> list[str]:
    """The overrides that make a rung run: its steps, scored on the held-in split; resumable."""
    return [f"trainer.max_steps={steps}", f"task.holdout_dev={holdout}", "trainer.resume=true"]


def lr_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in params.items()]


def halving_search(projection: str, common: list[str], args: argparse.Namespace, search_dir: Path) -> dict[str, Any]:
    """Run successive halving to completion (or print its next rung with --dry-run); the tuning record."""
    plan = halving.Plan(args.budget, args.rungs, args.eta, args.max_widen)
    first = halving.first_grid(args.trials)
    while True:
        reach = set(range(min(first) - plan.max_widen * plan.widen_by, max(first) + plan.max_widen * plan.widen_by + 1))
        search, todo = halving.advance(plan, first, halving_done(projection, search_dir, reach, common, args.holdout))
        if todo is None:
            break
        steps, indices = todo
        phase(f"{projection}: lr search rung at {steps} steps: {len(indices)} trials ({len(search.grid)} in the grid)")
        rung_dir = search_dir / f"steps_{steps}"
        lrs = [trial_lrs(projection, i) for i in indices]
        budget = rung_budget(steps, args.holdout)
        if len(lrs[0]) == 1:  # one lr key: one multirun over its values
            key = next(iter(lrs[0]))
            sweeps = [[f"{key}={','.join(t[key] for t in lrs)}", "hydra.sweep.subdir=lr_${" + key + "}"]]
        else:  # several keys move together: one job per trial (Hydra's basic sweeper takes products)
            sweeps = [[*(f"{k}={v}" for k, v in t.items()), f"hydra.sweep.subdir=t{i}"] for i, t in zip(indices, lrs)]
        for sweep in sweeps:
            run_py([*common, *budget, *sweep, f"hydra.sweep.dir={rung_dir}"], args.dry_run)
        if args.dry_run:
            break
    winner = search.winner()
    return {
        "search": "successive halving",
        "best_params": trial_lrs(projection, winner) if winner is not None else {},
        "best_value": search.rungs[-1].scores.get(winner) if search.rungs and winner is not None else None,
        "paper_lrs": paper_lrs(projection),
        "best_multiplier": halving.multiplier(winner) if winner is not None else None,
        "grid_multipliers": [halving.multiplier(i) for i in search.grid],
        "edge": search.edge(),
        "widenings": search.widenings,
        "rungs": [
            {"steps": r.steps, "scores": {json.dumps(trial_lrs(projection, i)): s for i, s in r.scores.items()}}
            for r in search.rungs
        ],
        "trials": len(search.grid),
        "complete": todo is None,
    }


# ----------------------------------------------------------------------------- one method
def optuna_search(projection: str, common: list[str], args: argparse.Namespace, search_dir: Path) -> dict[str, Any]:
    """Hydra's Optuna sweeper over P's lr group(s) (``hydra/sweeper=lr_P``), unless it already finished."""
    result = best_params(search_dir)
    if result is None:
        phase(f"{projection}: phase 1/2, lr search: {args.trials} trials scored on {args.holdout} held-in examples")
        run_py(
            [
                f"hydra/sweeper=lr_{projection}",
                *common,
                f"task.holdout_dev={args.holdout}",
                f"hydra.sweeper.n_trials={args.trials}",
                f"hydra.sweep.dir={search_dir}",
            ],
            args.dry_run,
        )
        result = best_params(search_dir) or {"best_params": {}, "best_value": None}
    else:
        phase(f"{projection}: phase 1/2, lr search: done earlier ({search_dir})")
    return {"search": "optuna", "best_params": dict(result["best_params"]), "best_value": result["best_value"]}


def compare_one(projection: str, args: argparse.Namespace, extra: list[str]) -> None:
    root = Path(args.out) / slug(args.task) / projection
    search_dir, final_dir = root / "search", root / "final"
    method = (
        [f"experiment={args.experiment_prefix}{projection}"] if args.experiment_prefix else [f"projection={projection}"]
    )
    common = [*method, f"task={args.task}", *extra]
    if args.search == "halving":
        result = halving_search(projection, common, args, search_dir)
        if not result["complete"]:  # --dry-run: the later rungs depend on scores not yet there
            return
        budget = [f"trainer.max_steps={args.budget}"]
    else:
        result = optuna_search(projection, common, args, search_dir)
        budget = []
    if args.eval_every:
        budget += ["trainer.eval_strategy=steps", f"trainer.eval_steps={args.eval_every}"]
    params = result["best_params"]
    final_job = [*common, *budget, *lr_overrides(params)]
    seeds = [s for s in args.seeds if s not in completed_seeds(final_dir, final_job)]
    chosen = " ".join(f"{k}={v}" for k, v in params.items()) or "the defaults"
    todo = f"seeds {','.join(map(str, seeds))} to run" if seeds else "every seed done earlier"
    phase(f"{projection}: phase 2/2, final runs at {chosen} (held-in best {result['best_value']}): {todo}")
    tuning = {
        "projection": projection,
        "task": args.task,
        **result,
        "best_value_scored_on": f"held-in: {args.holdout} examples carved from train (task.holdout_dev), not the dev set",
        "trials": result.get("trials", args.trials),
        "holdout_dev": args.holdout,
        "search_dir": str(search_dir),
        "command": shlex.join(["lorazoo-fair", *args.argv_for(projection)]),
    }
    if not args.dry_run:
        atomic_write_json(final_dir / "tuning.json", tuning)
    if seeds:
        run_py(
            [
                *final_job,
                "seed=" + ",".join(map(str, seeds)),
                "trainer.resume=true",
                f"hydra.sweep.dir={final_dir}",
                "hydra.sweep.subdir=seed_${seed}",
            ],
            args.dry_run,
        )


# ----------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lorazoo-fair",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Local data, as for run.py: data_root=<dir holding glue/SST-2, gsm8k/, ...> or task.data_dir=<dir> "
        "(task.data_file=<file> for file tasks). Any other run.py override works the same way.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="run.py overrides for every job, e.g. data_root=../shared/data, task.data_dir=<dir>, "
        "task.max_eval_samples=200, logger=none",
    )
    p.add_argument("--task", required=True, help="task option, e.g. glue/sst2")
    p.add_argument("--projections", required=True, help="comma-separated, e.g. lora,vera,unilora; 'all': every one")
    p.add_argument("--trials", type=int, default=8, help="lr-search trials per projection (the same for all)")
    p.add_argument("--seeds", default="0,1,2", help="seeds of the final runs at the best lr")
    p.add_argument(
        "--holdout", type=int, default=200, help="examples carved from train that score the search (never the dev set)"
    )
    p.add_argument("--out", default="runs/fair", help="root of the search and final sweep dirs")
    p.add_argument(
        "--experiment-prefix",
        default="",
        help="use experiment=<prefix><projection> for each method's settings (e.g. cpu_study_)",
    )
    p.add_argument("--search", choices=("optuna", "halving"), default="optuna", help="how the lr is searched")
    p.add_argument("--budget", type=int, default=480, help="halving: steps of the last rung and of the final runs")
    p.add_argument("--rungs", type=int, default=3, help="halving: rungs (the first trains budget/eta^(rungs-1))")
    p.add_argument("--eta", type=int, default=2, help="halving: 1/eta of a rung's trials go on to the next")
    p.add_argument("--max-widen", type=int, default=2, help="halving: times the grid may grow past an edge")
    p.add_argument(
        "--eval-every", type=int, default=0, help="final runs: dev evaluation every N steps (curves, best step)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the run.py commands only")
    return p


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # the older spelling: overrides after --
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = parser()
    args = p.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        p.error(f"{bad[0]!r} is not an option or a key=value override (e.g. data_root=<dir>)")
    args.seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    if args.trials <= 0 or args.holdout <= 0 or not args.seeds:
        p.error("--trials and --holdout must be > 0 and --seeds non-empty")
    names = projection_names()
    wanted = names if args.projections == "all" else [x for x in args.projections.split(",") if x]
    unknown = [x for x in wanted if x not in names]
    if unknown:
        p.error(f"--projections: {unknown[0]!r} is not a registered projection; valid: {', '.join(names)} or all")
    args.projections = wanted
    if args.search == "halving":
        try:
            halving.Plan(args.budget, args.rungs, args.eta, args.max_widen)
            halving.first_grid(args.trials)
        except halving.HalvingError as exc:
            p.error(str(exc))

    def argv_for(projection: str) -> list[str]:
        """This command narrowed to one projection: the row's reproduce command."""
        kept, skip = [], False
        for item in argv:
            if skip or item.startswith("--projections="):
                skip = False
                continue
            skip = item == "--projections"
            kept += [] if skip else [item]
        return ["--projections", projection, *kept, *extra]

    args.argv_for = argv_for
    return args, [*args.overrides, *extra]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(list(sys.argv[1:] if argv is None else argv))
    for k, projection in enumerate(args.projections, 1):
        phase(f"method {k}/{len(args.projections)}: {projection} on {args.task}")
        compare_one(projection, args, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
