#!/usr/bin/env python
"""Fair comparison of projections: the same lr-search budget for each, then seeds at each one's best lr.

    python scripts/fair_compare.py --task glue/sst2 --projections lora,vera,unilora --trials 6 --seeds 0,1,2 \\
        --out runs/fair [--experiment-prefix cpu_study_] [data_root=<dir> | task.data_dir=<dir>] [key=value ...]

Every ``key=value`` argument is a run.py override passed to every job (search and final), so local data is given
exactly as to run.py: ``data_root=../shared/data`` or ``task.data_dir=../shared/data/glue/SST-2``.

For every projection P, two Hydra multiruns of ``python run.py`` (Hydra is the engine; this only sequences):
  1. search: ``-m hydra/sweeper=lr_P task.holdout_dev=N hydra.sweeper.n_trials=T`` — Optuna over P's lr
     group(s), every trial scored on N examples carved from *train* (seeded), never on the dev set;
     written to <out>/<task>/<P>/search (optimization_results.yaml, one job dir per trial);
  2. final: the best trial's lrs, ``seed=S1,S2,...``, scored on the real dev set; <out>/<task>/<P>/final,
     with tuning.json beside the job dirs (best lrs, best held-in score, trials) for scripts/compare.py.
Re-running the same command resumes: a finished search is not repeated, finished seeds are not retrained
(one job dir per seed, ``seed_<s>``), an interrupted seed resumes from its last checkpoint.
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

from lorazoo.files import atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def slug(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", task)


def run_py(args: list[str], dry_run: bool) -> None:
    """One ``python run.py -m ...``; a failed sweep stops the comparison with its exit code."""
    command = [sys.executable, str(REPO / "run.py"), "-m", *args]
    print("+ " + shlex.join(["python", "run.py", "-m", *args]), flush=True)
    if not dry_run:
        done = subprocess.run(command, check=False)
        if done.returncode != 0:
            raise SystemExit(f"error: run.py exited {done.returncode}; rerun the same command to resume")


def phase(line: str) -> None:
    """Where the comparison is; each run.py sweep then prints one [k/n] line per finished trial or seed."""
    print(f"[fair_compare] {line}", flush=True)


def best_params(search_dir: Path) -> dict[str, Any] | None:
    results = search_dir / "optimization_results.yaml"
    return yaml.safe_load(results.read_text()) if results.is_file() else None


def completed_seeds(final_dir: Path, params: dict[str, Any]) -> set[int]:
    """Seeds whose final run completed with exactly these lrs (an older search's runs do not count)."""
    wanted = {f"{k}={v}" for k, v in params.items()}
    done = set()
    for path in final_dir.glob("*/metrics.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("status") == "completed" and wanted <= set(record.get("overrides") or []):
            done.add(int(record["seed"]))
    return done


def compare_one(projection: str, args: argparse.Namespace, extra: list[str]) -> None:
    root = Path(args.out) / slug(args.task) / projection
    search_dir, final_dir = root / "search", root / "final"
    method = (
        [f"experiment={args.experiment_prefix}{projection}"] if args.experiment_prefix else [f"projection={projection}"]
    )
    common = [*method, f"task={args.task}", *extra]
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
    params = dict(result["best_params"])
    seeds = [s for s in args.seeds if s not in completed_seeds(final_dir, params)]
    chosen = " ".join(f"{k}={v}" for k, v in params.items()) or "the defaults"
    todo = f"seeds {','.join(map(str, seeds))} to run" if seeds else "every seed done earlier"
    phase(f"{projection}: phase 2/2, final runs at {chosen} (held-in best {result['best_value']}): {todo}")
    tuning = {
        "projection": projection,
        "task": args.task,
        "best_params": params,
        "best_value": result["best_value"],
        "best_value_scored_on": f"held-in: {args.holdout} examples carved from train (task.holdout_dev), not the dev set",
        "trials": args.trials,
        "holdout_dev": args.holdout,
        "search_dir": str(search_dir),
    }
    if not args.dry_run:
        atomic_write_json(final_dir / "tuning.json", tuning)
    if seeds:
        run_py(
            [
                *common,
                *(f"{k}={v}" for k, v in params.items()),
                "seed=" + ",".join(map(str, seeds)),
                "trainer.resume=true",
                f"hydra.sweep.dir={final_dir}",
                "hydra.sweep.subdir=seed_${seed}",
            ],
            args.dry_run,
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []  # the older spelling: overrides after --
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Local data, as for run.py: data_root=<dir holding glue/SST-2, gsm8k/, ...> or task.data_dir=<dir> "
        "(task.data_file=<file> for file tasks). Any other run.py override works the same way.",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="run.py overrides for every job, e.g. data_root=../shared/data, task.data_dir=<dir>, "
        "task.max_eval_samples=200, logger=none",
    )
    parser.add_argument("--task", required=True, help="task option, e.g. glue/sst2")
    parser.add_argument("--projections", required=True, help="comma-separated, e.g. lora,vera,unilora")
    parser.add_argument("--trials", type=int, default=8, help="lr-search trials per projection (the same for all)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the final runs at the best lr")
    parser.add_argument(
        "--holdout", type=int, default=200, help="examples carved from train that score the search (never the dev set)"
    )
    parser.add_argument("--out", default="runs/fair", help="root of the search and final sweep dirs")
    parser.add_argument(
        "--experiment-prefix",
        default="",
        help="use experiment=<prefix><projection> for each method's settings (e.g. cpu_study_)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the run.py commands only")
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"{bad[0]!r} is not an option or a key=value override (e.g. data_root=<dir>)")
    extra = [*args.overrides, *extra]
    args.seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    if args.trials <= 0 or args.holdout <= 0 or not args.seeds:
        parser.error("--trials and --holdout must be > 0 and --seeds non-empty")
    projections = [p for p in args.projections.split(",") if p]
    for k, projection in enumerate(projections, 1):
        phase(f"method {k}/{len(projections)}: {projection} on {args.task}")
        compare_one(projection, args, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
