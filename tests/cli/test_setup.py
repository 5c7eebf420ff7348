"""README set-up: command 1 (scripts/install.sh: ``pip install -e .``, no extras) installs every library the README's
Python API section uses, in its code and in the library calls its text names (``peft.PeftModel...``)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the suite's CI); 3.10 skips this file


def api_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Python API", 1)[1].split("\n## ", 1)[0]


def modules_used(section: str) -> set[str]:
    """Top-level modules imported by the section's python blocks or named as ``module.Name`` in inline code."""
    found = set()
    for block in re.findall(r"```python\n(.*?)```", section, re.S):
        found |= set(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", block, re.M))
    prose = re.sub(r"```.*?```", "", section, flags=re.S)
    found |= {m for m in re.findall(r"`([a-z_]\w*)\.[A-Z]\w*", prose) if m in packages_distributions()}
    return {m for m in found if m not in sys.stdlib_module_names and m != "lorazoo"}


def runtime_requirements() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


def test_the_api_section_names_peft():
    assert "peft" in modules_used(api_section())  # the reader is told to load the export with PEFT


@pytest.mark.parametrize("module", sorted(modules_used(api_section())))
def test_command_1_installs_what_the_python_api_uses(module: str):
    distributions = {canonicalize_name(d) for d in packages_distributions().get(module, [])}
    assert distributions & runtime_requirements(), (
        f"README's Python API uses {module} ({sorted(distributions)}), which `pip install -e .` (command 1) "
        "does not install: add it to [project] dependencies"
    )
