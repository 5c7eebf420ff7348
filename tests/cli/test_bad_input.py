"""`python run.py` on bad input: one line naming the bad value and what is valid, no traceback wall;
and a parallel joblib multirun that gives every job its own intact output directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import run_py, tiny_job
from helpers.forked_cli import run_cli

BASE = ["model=tiny_bert", "logger=none", "trainer.progress_bar=false"]

# id: (overrides, regex the last stderr line must match, "hydra" when Hydra itself rejects it at compose time)
CASES: dict[str, tuple[list[str], str, str]] = {
    # a group option that does not exist: one line listing every option, sub-folders included
    "unknown projection": (
        ["projection=unilorra"],
        r"^error: projection=unilorra is not an option of group projection; did you mean projection=unilora\? "
        r"valid: fastfood, ",
        "",
    ),
    "unknown task": (["task=tweetz"], r"^error: task=tweetz is not an option .*valid: glue/cola, .*, tweets$", ""),
    "unknown model": (
        ["model=tiny_bertt"],
        r"^error: model=tiny_bertt is not an option of group model; did you mean model=tiny_bert\? .*smollm2-135m",
        "",
    ),
    "misspelled key": (
        ["trainer.max_stepz=3"],
        r"Could not override 'trainer.max_stepz'.*\nKey 'max_stepz' is not in struct"
        r".*\nerror: unknown key 'trainer.max_stepz'; did you mean trainer.max_steps\? valid keys under "
        r"trainer: trainer.max_steps, ",
        "hydra",
    ),
    "rank 0": (["projection.rank=0"], r"^error: projection\.rank=0 is invalid; valid: an integer in 1\.\.", ""),
    "alpha < 0": (
        ["projection=lora", "projection.alpha=-1"],
        r"^error: projection\.alpha=-1 is invalid; valid: a finite number >= 0",
        "",
    ),
    "d = 0": (["projection.kwargs.d=0"], r"^error: unilora: d=0 is invalid; valid: 1\.\.1,024", ""),
    "d > D": (
        ["projection.kwargs.d=1025"],
        r"^error: projection\.kwargs\.d=1025 exceeds D=1,024 .*a value that works: projection\.kwargs\.d=160$",
        "",
    ),
    "vblora vector_length": (
        ["projection=vblora", "projection.kwargs.vector_length=7"],
        r"^error: projection\.kwargs\.vector_length=7 does not divide every adapted size of model "
        r"tiny_bert \[32\]; a value that works: projection\.kwargs\.vector_length=4",
        "",
    ),
    "prolora m = 0": (["projection=prolora", "projection.kwargs.m=0"], r"^error: prolora: m=0 is invalid; valid:", ""),
    "targets match nothing": (
        ["model.target_modules=[qeury]"],
        r"^error: target_modules=\['qeury'\] matched no adaptable module .*'query'.*'all-linear'",
        "",
    ),
    "empty data file": (["task.data_file={tmp}/empty.csv"], r"^error: data file '.*/empty\.csv' is empty$", ""),
    "malformed data file": (
        ["task.data_file={tmp}/bad.csv"],
        r"^error: .*/bad\.csv:3: sentiment 'angry' is not one of \['negative', 'neutral', 'positive'\]$",
        "",
    ),
    "hub unreachable": (
        ["task=glue/sst2"],
        r"^error: cannot download nyu-mll/glue/sst2 \(cannot reach .*task\.data_dir=",
        "",
    ),
    # each of these was once a traceback
    "negative lr": (["optimizer.lr=-0.1"], r"^error: optimizer\.lr=-0\.1 is invalid; valid: a finite number > 0$", ""),
    "max_length 0": (["task.max_length=0"], r"^error: task\.max_length=0 is invalid; valid: an integer in 1\.\.", ""),
    "max_length > positions": (
        ["task.max_length=513"],
        r"^error: task\.max_length=513 is invalid; valid: 1\.\.512 \(the positions of model='tiny_bert'\)$",
        "",
    ),
    "deeply nested override": (
        ["projection.kwargs=" + "{a:" * 300 + "1" + "}" * 300],
        r"^error: override 'projection\.kwargs=\{a:.*' is nested 300 levels deep; valid: at most 32$",
        "",
    ),
    "modules_to_save string": (
        ["model.modules_to_save=classifier"],
        r"^error: model\.modules_to_save='classifier' is invalid; valid: a list of strings",
        "",
    ),
    "symlink to /dev/zero": (
        ["task.data_file={tmp}/zero.csv"],
        r"^error: data file '.*/zero\.csv' is not a regular file \(it resolves to '/dev/zero'\)",
        "",
    ),
}
if not torch.cuda.is_available():  # where bf16 is supported the run is valid
    CASES["bf16 unsupported"] = (
        ["trainer.precision=bf16"],
        r"^error: trainer\.precision=bf16 is not supported here",
        "",
    )
FULL_ERROR = "HYDRA_FULL_ERROR=1"


def _env(case: str) -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HYDRA_FULL_ERROR", None)
    if case == "hub unreachable":  # a real connection failure, not the offline switch: nothing listens on port 9
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(name, None)
        env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    else:
        env["HF_HUB_OFFLINE"] = "1"
    if case == FULL_ERROR:
        env["HYDRA_FULL_ERROR"] = "1"
    return env


def _run(case: str, overrides: list[str], tmp: Path) -> subprocess.CompletedProcess:
    args = [o.replace("{tmp}", str(tmp)) for o in overrides]
    run_dir = tmp / "runs" / re.sub(r"\W+", "_", case)  # a name Hydra's override grammar accepts
    if case != "hub unreachable":  # it changes HF_HUB_OFFLINE, which huggingface_hub reads at import
        return run_cli([*BASE, *args, f"hydra.run.dir={run_dir}"], _env(case), tmp)
    return run_py(*BASE, *args, f"hydra.run.dir={run_dir}", cwd=tmp, timeout=300, env=_env(case))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case at once, two processes at a time (each is mostly interpreter and torch start-up)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "empty.csv").write_text("")
    (tmp / "bad.csv").write_text("sentiment,text\npositive,a fine day\nangry,a bad day\n")
    (tmp / "zero.csv").symlink_to("/dev/zero")
    jobs = {**{case: spec[0] for case, spec in CASES.items()}, FULL_ERROR: ["projection.rank=0"]}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {case: pool.submit(_run, case, overrides, tmp) for case, overrides in jobs.items()}
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(results: dict, case: str):
    _, pattern, source = CASES[case]
    out = results[case]
    assert out.returncode != 0, f"{case}: accepted\n{out.stdout[-1500:]}"
    assert "Traceback" not in out.stderr, f"{case}: traceback wall\n{out.stderr[-3000:]}"
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if source == "hydra":  # Hydra's own message: names the bad value, lists what exists, no traceback
        assert out.returncode == 1 and re.search(pattern, out.stderr, re.DOTALL), out.stderr[-2000:]
        return
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], (
        f"{case}: expected one final 'error:' line\n{out.stderr[-2000:]}"
    )
    assert re.search(pattern, lines[-1]), f"{case}: {lines[-1]!r} !~ {pattern!r}"
    assert "\n" not in lines[-1] and len(lines[-1]) < 400


def test_full_error_shows_the_traceback(results: dict):
    out = results[FULL_ERROR]
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "ConfigError: projection.rank=0 is invalid" in out.stderr


def test_joblib_multirun_one_intact_dir_per_job(tmp_path: Path):
    """6 jobs on 2 joblib workers: one directory per job, each with its own completed metrics.json and adapter."""
    sweep = tmp_path / "sweep"
    job = tiny_job(16, 8, "trainer.max_steps=2", "trainer.batch_size=8", projection="lora,unilora,vera")
    fit = ["projection.rank=32", "model.target_modules=all-linear"]  # D = 30,720 ≥ Uni-LoRA's default d: one d fits all
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    out = run_py("-m", *joblib, *job, *fit, "seed=0,1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    dirs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(dirs) == 6, [p.name for p in dirs]
    seen = set()
    for job in dirs:
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "completed" and record["steps"] == 2
        assert Path(record["output_dir"]) == job.resolve()  # the job wrote where Hydra put it
        assert f"projection={record['projection']}" in job.name and f"seed={record['seed']}" in job.name
        assert sorted(p.name for p in (job / "adapter").iterdir()) == ["adapter.safetensors", "adapter_config.json"]
        saved = json.loads((job / "adapter" / "adapter_config.json").read_text())["config"]
        assert (saved["projection"], saved["seed"]) == (record["projection"], record["seed"])
        seen.add((record["projection"], record["seed"]))
    assert seen == {(p, s) for p in ("lora", "unilora", "vera") for s in (0, 1)}  # no job shared a dir
    assert not list(sweep.rglob("*.tmp"))
