"""Write a pip constraints file pinning every direct dependency of lorazoo (runtime + the given extras) to
the lowest version its specifier in pyproject.toml allows, so CI can prove that the declared floors work.

    python scripts/floors.py dev > floors.txt && pip install -c floors.txt -e .[dev]

torch is left out: it is installed first from the pinned CPU wheel (see scripts/install.sh).
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

SKIP = {"torch", "lorazoo"}


def lowest(requirement: Requirement) -> Version | None:
    """The version a ``>=``, ``==`` or ``~=`` clause names as the lowest allowed (None when unbounded below)."""
    for clause in requirement.specifier:
        if clause.operator in (">=", "~=", "=="):
            return Version(clause.version.replace(".*", ".0"))
    return None


def direct_requirements(pyproject: dict, extras: list[str]) -> list[Requirement]:
    project = pyproject["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if requirement.name == "lorazoo":
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    floors: dict[str, Version] = {}
    for requirement in direct_requirements(pyproject, argv):
        if requirement.name in SKIP:
            continue
        version = lowest(requirement)
        if version is None:
            print(f"error: {requirement} has no lower bound; give it one in pyproject.toml", file=sys.stderr)
            return 2
        floors[requirement.name] = max(floors.get(requirement.name, version), version)  # [dev] may pin higher
    for name, version in floors.items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
