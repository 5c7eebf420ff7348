"""Console commands (``[project.scripts]`` in pyproject.toml): the library tools are declared there, every declared
command names a ``main`` that exists and runs as ``python -m <module> --help``, and each scripts/ file the README
names calls that same ``main``."""

from __future__ import annotations

import importlib
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the suite's CI)

REPO = Path(__file__).resolve().parents[2]
DECLARED: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# command -> (module, the scripts/ file kept for `python scripts/x.py`, an option its --help must list)
LIBRARY_COMMANDS = {
    "lorazoo-count": ("lorazoo.counting_tables", "count_params.py", "--projection"),
    "lorazoo-export": ("lorazoo.export_peft", "export_peft.py", "--max-rank"),
    "lorazoo-evaluate": ("lorazoo.evaluate", "evaluate.py", "--include-path"),
}


@pytest.mark.parametrize("command", sorted(LIBRARY_COMMANDS))
def test_library_command_is_declared_and_its_script_calls_it(command: str):
    module, script, _ = LIBRARY_COMMANDS[command]
    assert DECLARED.get(command) == f"{module}:main"
    shim = runpy.run_path(str(REPO / "scripts" / script), run_name="shim")  # not __main__: defines, runs nothing
    assert shim["main"] is importlib.import_module(module).main


@pytest.mark.parametrize("command", sorted(DECLARED))
def test_every_declared_command_runs_as_python_m(command: str):
    module, _, function = DECLARED[command].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: "), done.stdout[:200]
    if command in LIBRARY_COMMANDS:
        assert LIBRARY_COMMANDS[command][2] in done.stdout


def test_evaluate_records_the_command_that_was_run(monkeypatch):
    """The results file's ``command`` is how lorazoo-evaluate was started, so it reruns where it was run."""
    from lorazoo import evaluate

    for argv0, expected in [
        ("/venv/bin/lorazoo-evaluate", ["lorazoo-evaluate"]),
        (evaluate.__file__, ["python", "-m", "lorazoo.evaluate"]),
        ("scripts/evaluate.py", ["python", "scripts/evaluate.py"]),
    ]:
        monkeypatch.setattr(sys, "argv", [argv0, "run", "--tasks", "t"])
        assert evaluate.invocation() == expected
