"""Adding a method is one file: a projection dropped into a copy of the package is registered, validated,
run through the invariant matrix and every per-projection test, and trained by run.py and its lr sweep
(configs derived from its ``paper`` declaration) with no other file touched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import run_env, run_py, tiny_job

import lorazoo

REPO_ROOT = Path(__file__).resolve().parents[2]

DROPIN = textwrap.dedent('''
    """A test-only method: LoRA whose θ_D is θ times a fixed scale (the smallest projection there is)."""

    from dataclasses import dataclass

    import torch
    from torch import nn

    from .base import PaperSettings, Projection, register_projection
    from .options import option


    @dataclass(frozen=True)
    class DropinOptions:
        scale: float = option(1.0, positive=True)
        copies: int = option(1, positive=True, high="rank", high_name="rank")


    @register_projection("dropin")
    class DropinProjection(Projection):
        paper = PaperSettings(rank=4, alpha=8, lr=2e-3, source="a test-only method: no paper")
        Options = DropinOptions
        is_linear = True
        uses_alpha = True
        zero_at_init = True
        tiny_case = {"scale": 0.5}

        def __init__(self, layout, config):
            super().__init__(layout, config)
            self.theta = nn.Parameter(self.lora_init())

        def forward(self) -> torch.Tensor:
            return self.theta * self.opts.scale
''')

CHECK = textwrap.dedent("""
    import sys
    import lorazoo
    from lorazoo import AdapterConfig, ConfigError, attach
    from helpers import PROJECTION_CASES, tiny_bert

    assert lorazoo.__file__.startswith(sys.argv[1]), lorazoo.__file__
    assert "dropin" in lorazoo.projection_names()
    assert PROJECTION_CASES["dropin"] == {"scale": 0.5}
    for kwargs in ({"scale": -1.0}, {"copies": 9}, {"copies": "two"}, {"colour": 1}):
        try:
            attach(tiny_bert(), AdapterConfig(projection="dropin", rank=4, projection_kwargs=kwargs))
        except ConfigError as exc:
            print("ERROR", exc)
        else:
            raise SystemExit(f"{kwargs} was accepted")
""")


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dropin") / "src"
    shutil.copytree(Path(lorazoo.__file__).parent, root / "lorazoo", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "lorazoo" / "projections" / "dropin.py").write_text(DROPIN)
    return root


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(REPO_ROOT / "tests")]), "OMP_NUM_THREADS": "1"}


def test_dropped_in_file_is_registered_and_validated(package_copy):
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(package_copy)],
        env=_env(package_copy),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    errors = [line[len("ERROR ") :] for line in result.stdout.splitlines() if line.startswith("ERROR ")]
    assert errors == [
        "dropin: scale=-1.0 is invalid; valid: a finite number > 0",
        "dropin: copies=9 is invalid; valid: 1..4 (rank)",
        "dropin: copies='two' is invalid; valid: 1..4 (rank)",
        "unknown option(s) ['colour'] for projection 'dropin'; valid: ['copies', 'scale']",
    ]


@pytest.mark.slow
def test_dropped_in_file_runs_the_invariant_matrix(package_copy):
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO_ROOT / "tests" / "core" / "test_invariants.py"),
        "-k",
        "dropin",
        "-q",
        "-n",
        "0",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
    ]
    result = subprocess.run(
        command, env=_env(package_copy), cwd=package_copy.parent, capture_output=True, text=True, timeout=600
    )
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    passed = re.search(r"(\d+) passed", result.stdout)
    # every invariant × every tiny model + the per-projection tiny-case check, nothing skipped
    from core import test_invariants

    invariants = [n for n in vars(test_invariants.TestInvariants) if n.startswith("test_")]
    expected = len(invariants) * len(test_invariants.KINDS) + 1
    assert passed and int(passed.group(1)) == expected, tail
    assert "skipped" not in result.stdout.splitlines()[-1], tail


RUN_TINY = tiny_job(16, 8, "trainer.max_steps=2", "trainer.batch_size=8", projection="dropin")


def _run_py(package_copy: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_py(*args, cwd=cwd, timeout=600, env=run_env(**_env(package_copy)))


def test_dropped_in_file_trains_through_run_py_with_its_paper_settings(package_copy, tmp_path):
    """projection=dropin resolves to the file's ``paper`` declaration (no configs/projection/dropin.yaml)."""
    out = _run_py(package_copy, *RUN_TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and record["steps"] == 2
    config = yaml.safe_load((tmp_path / "run" / ".hydra" / "config.yaml").read_text())
    assert config["projection"] == {
        "name": "dropin",
        "rank": 4,
        "alpha": 8,
        "dropout": 0.0,
        "kwargs": {"scale": 1.0, "copies": 1},
    }
    assert (config["optimizer"]["lr"], config["optimizer"]["weight_decay"]) == (2e-3, 0.0)


def test_dropped_in_file_has_a_working_lr_sweep(package_copy, tmp_path):
    """hydra/sweeper=lr_dropin exists (derived: log-uniform 1/10 .. 100 × the declared lr) and one trial runs."""
    sweep = tmp_path / "sweep"
    out = _run_py(
        package_copy,
        "-m",
        "hydra/sweeper=lr_dropin",
        *RUN_TINY,
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Best value:" in out.stdout + out.stderr
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert [r["status"] for r in records] == ["completed"]
    (lr,) = [float(o.split("=", 1)[1]) for o in records[0]["overrides"] if o.startswith("optimizer.lr=")]
    assert 2e-4 <= lr <= 0.2
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"] == records[0]["accuracy"]


def test_dropped_in_file_is_listed_by_help(package_copy, tmp_path):
    out = _run_py(package_copy, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    groups = out.stdout.split("== Config ==")[0]  # the group list, not the composed config below it
    (line,) = [line for line in groups.splitlines() if line.startswith("projection:")]
    assert "dropin" in line.split(": ", 1)[1].split(", ")


PER_PROJECTION_TESTS = [  # tests parametrised over projection_names() whose dropin cases must all pass
    "cli/test_run_command.py::test_defaults_fit_every_packaged_model",
    "cli/test_run_command.py::test_every_projection_trains_with_its_defaults_through_the_runner",
    "train/sweep/test_sweep.py::test_every_projection_has_an_lr_preset_around_its_lr",
    "train/config/test_config_groups.py::test_every_projection_declares_its_paper_settings",
    "train/config/test_config_groups.py::test_lr_sweeper_searches_each_declared_lr",
    "core/test_pieces.py",
    "core/test_properties.py",
]


@pytest.mark.slow
def test_dropped_in_file_passes_every_per_projection_test(package_copy):
    files = sorted({str(REPO_ROOT / "tests" / t.split("::")[0]) for t in PER_PROJECTION_TESTS})
    command = [sys.executable, "-m", "pytest", *files, "-k", "dropin", "-v", "-n", "0"]
    command += ["-p", "no:cacheprovider", "-p", "no:randomly"]
    env = {**_env(package_copy), "LORAZOO_CONFIG_DIR": str(REPO_ROOT / "configs")}
    result = subprocess.run(command, env=env, cwd=package_copy.parent, capture_output=True, text=True, timeout=900)
    tail = result.stdout[-3000:] + result.stderr[-2000:]
    assert result.returncode == 0, tail
    passed = re.findall(r"tests/(\S+?)\[\S*dropin\S*\] PASSED", result.stdout)
    for test in PER_PROJECTION_TESTS:
        assert any(p.startswith(test) for p in passed), (test, tail)
    assert sum("test_defaults_fit" in p for p in passed) == 4, tail  # every packaged model


def test_a_file_without_a_paper_declaration_is_one_line_naming_it(tmp_path):
    """No ``paper``: nothing is derived, and run.py says why in one line instead of 'not an option'."""
    root = tmp_path / "src"
    shutil.copytree(Path(lorazoo.__file__).parent, root / "lorazoo", ignore=shutil.ignore_patterns("__pycache__"))
    undeclared = "\n".join(line for line in DROPIN.splitlines() if "paper = PaperSettings" not in line)
    (root / "lorazoo" / "projections" / "dropin.py").write_text(undeclared)
    out = _run_py(root, *RUN_TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert out.returncode == 2
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: projection=dropin is registered but declares no paper = PaperSettings(rank=..., lr=..., source=...), "
        "from which projection=dropin is derived; add it to its file (or write configs/projection/dropin.yaml)"
    ], out.stderr[-2000:]
    assert not (tmp_path / "run").exists()
