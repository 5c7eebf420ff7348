"""Rerun a run from its directory alone and say whether the result matches the recorded one.

    lorazoo-rerun <run dir> [--out <new dir>] [--atol 1e-6] [-- extra overrides, e.g. logger=none]
    (or: python -m lorazoo.rerun ...)

The run dir's ``config_used.yaml`` is the config as the run used it (values fitted to the model included); it is
composed by Hydra as given (``--config-path <run dir> --config-name config_used``), with each fitted key passed
explicitly so nothing is fitted again, from the working directory the run recorded (relative data paths resolve
as they did). The rerun writes a NEW directory (default ``<run dir>-rerun-<time>``): nothing of the original run
changes. It then compares every final metric with metrics.json, and names what differs in the environment
(data files' sha256, git commit, library versions). Exit status: 0 when every metric matches within ``--atol``,
1 when one differs, 2 when the run dir cannot be rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lorazoo.errors import LoraZooError
from lorazoo.train.records.provenance import CONFIG_USED


class RerunError(LoraZooError, ValueError):
    """The directory holds no completed run that can be rerun (the message names what is missing)."""


def read_record(run_dir: Path) -> dict[str, Any]:
    """The completed metrics.json of ``run_dir`` whose config_used.yaml is there."""
    path = run_dir / "metrics.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RerunError(f"{path} is missing or unreadable ({type(exc).__name__}); valid: a lorazoo run dir") from None
    if not isinstance(record, dict) or record.get("status") != "completed":
        status = record.get("status") if isinstance(record, dict) else None
        raise RerunError(f"{run_dir} holds a run with status {status!r}; only a completed run can be compared")
    if not (run_dir / CONFIG_USED).is_file():
        raise RerunError(
            f"{run_dir} has no {CONFIG_USED} (runs before lorazoo recorded it); rerun its command instead: "
            f"{record.get('command')}"
        )
    return record


def hydra_value(value: Any) -> str:
    """A fitted value as a Hydra override value (JSON is valid Hydra for numbers, strings, lists)."""
    return json.dumps(value) if not isinstance(value, str) else json.dumps(value).replace('"', "'")


def rerun_command(run_dir: Path, record: dict[str, Any], out: Path, extra: list[str]) -> list[str]:
    fitted = {k: v["to"] for k, v in (record.get("fitted_to_model") or {}).items() if isinstance(v, dict)}
    return [
        sys.executable,
        "-m",
        "lorazoo.cli",
        "--config-path",
        str(run_dir.resolve()),
        "--config-name",
        Path(CONFIG_USED).stem,
        f"hydra.run.dir={out}",
        "hydra.output_subdir=null",  # as configs/config.yaml: lorazoo writes .hydra/ once the run owns the dir
        "hydra.job.chdir=false",
        *(f"{key}={hydra_value(value)}" for key, value in fitted.items()),
        *extra,
    ]


def differences(old: dict[str, Any], new: dict[str, Any], atol: float) -> list[tuple[str, Any, Any]]:
    """(metric, recorded, rerun) for every final metric that differs by more than ``atol`` or is missing."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        same = (math.isclose(a, b, rel_tol=0.0, abs_tol=atol) or a == b) if numbers else a == b  # type: ignore[arg-type]
        if not same:
            found.append((key, a, b))
    return found


def environment_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the two runs' code, libraries and data (reasons a result may not match)."""
    notes = []
    for key in ("data_sha256", "git", "versions", "lorazoo_version"):
        if old.get(key) != new.get(key):
            notes.append(f"{key}: {json.dumps(old.get(key))} → {json.dumps(new.get(key))}")
    return notes


def rerun(
    run_dir: str | Path, out: str | Path | None = None, atol: float = 1e-6, extra: list[str] | None = None
) -> int:
    """Rerun and report; returns the exit status (0 match, 1 differs)."""
    run_dir = Path(run_dir).resolve()
    record = read_record(run_dir)
    target = Path(out) if out else run_dir.with_name(f"{run_dir.name}-rerun-{time.strftime('%Y%m%d-%H%M%S')}")
    target = target.resolve()
    if target.exists() and any(target.iterdir()):
        raise RerunError(f"--out {target} is not empty; valid: a new or empty directory")
    cwd = record.get("cwd") if record.get("cwd") and Path(record["cwd"]).is_dir() else os.getcwd()
    command = rerun_command(run_dir, record, target, list(extra or []))
    print(f"[lorazoo-rerun] {' '.join(command[1:])}  (in {cwd})", flush=True)
    done = subprocess.run(command, cwd=cwd, check=False)
    new_path = target / "metrics.json"
    if done.returncode != 0 or not new_path.is_file():
        raise RerunError(f"the rerun failed (exit {done.returncode}); its output is in {target}")
    new = json.loads(new_path.read_text())
    diff = differences(record.get("metrics") or {}, new.get("metrics") or {}, atol)
    for key, a, b in diff:
        print(f"  {key}: recorded {a!r}, rerun {b!r}")
    for note in environment_changes(record, new):
        print(f"  changed since the run: {note}")
    n = len(record.get("metrics") or {})
    if diff:
        print(f"[lorazoo-rerun] DIFFERS: {len(diff)} of {n} metrics differ by more than {atol} ({target})")
        return 1
    print(f"[lorazoo-rerun] MATCHES: all {n} recorded metrics within {atol} ({target})")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="lorazoo-rerun",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Anything after -- is passed to run.py as overrides (e.g. -- logger=none).",
    )
    parser.add_argument("run_dir", help="a completed run's directory (holds metrics.json and config_used.yaml)")
    parser.add_argument("--out", default=None, help="the new run dir (default: <run dir>-rerun-<time>)")
    parser.add_argument("--atol", type=float, default=1e-6, help="largest metric difference called a match")
    args = parser.parse_args(argv)
    try:
        return rerun(args.run_dir, args.out, args.atol, extra)
    except LoraZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
