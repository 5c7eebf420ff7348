"""Adding a method is one file: a projection dropped into a copy of the package is registered,
validated and run through the invariant matrix with no other file touched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lorazoo

REPO_ROOT = Path(__file__).resolve().parents[1]

DROPIN = textwrap.dedent('''
    """A test-only method: LoRA whose θ_D is θ times a fixed scale (the smallest projection there is)."""

    from dataclasses import dataclass

    import torch
    from torch import nn

    from .base import Projection, register_projection
    from .options import option


    @dataclass(frozen=True)
    class DropinOptions:
        scale: float = option(1.0, positive=True)
        copies: int = option(1, positive=True, high="rank", high_name="rank")


    @register_projection("dropin")
    class DropinProjection(Projection):
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
    from conftest import PROJECTION_CASES, tiny_bert

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
        str(REPO_ROOT / "tests" / "test_invariants.py"),
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
    import test_invariants

    invariants = [n for n in vars(test_invariants.TestInvariants) if n.startswith("test_")]
    expected = len(invariants) * len(test_invariants.KINDS) + 1
    assert passed and int(passed.group(1)) == expected, tail
    assert "skipped" not in result.stdout.splitlines()[-1], tail
