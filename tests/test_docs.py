"""README.md and CONTRIBUTING.md stay true to the tree: every file, test, module and version floor they name exists.

Modules and tests move (issue 27's layout moved 40 of them); a doc that still points at the old place sends a
reader to a file that is not there. These tests read the two docs as text and check each kind of reference
against the checkout: file paths, ``tests/<path>.py::<name>`` ids (and the ``::<name>`` that continue one on
the same line), bare test names, dotted ``lorazoo.<module>.<name>`` references, the README's module table,
CONTRIBUTING's layer chain (against ``tests/test_architecture.py::LAYERS``) and the README's supported
versions (against ``pyproject.toml``).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "lorazoo"
DOCS = ("README.md", "CONTRIBUTING.md")
# Files the docs ask the reader to create (CONTRIBUTING's walkthroughs), so they are meant not to exist.
EXAMPLE_FILES = {"src/lorazoo/projections/halfshared.py", "src/lorazoo/train/tasks/reviews.py"}
# Packages whose modules get one README row each; every other package is one row naming its modules.
EXPANDED_PACKAGES = (PACKAGE, PACKAGE / "train")

PATH = r"(?<![\w./<>:@-])(?P<path>(?:[\w-]+/)+[\w-]+\.(?:py|yaml|json|sh|toml))(?:::(?P<name>\w+))?"
CONTINUED = r"(?<![\w.:])::(?P<continued>\w+)"
BARE_TEST = r"`(?P<bare>test_\w+|Test\w+)`"
DOTTED = r"(?<![\w./-])(?P<dotted>lorazoo(?:\.\w+)+)"
REFERENCE = re.compile("|".join((PATH, CONTINUED, BARE_TEST, DOTTED)))


@cache
def defined_names(path: Path) -> frozenset[str]:
    """Top-level functions, classes and assigned names of a Python file, and the methods of its classes."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names.update(n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, (ast.Import, ast.ImportFrom)):  # a package's re-exports (lorazoo.attach)
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return frozenset(names)


@cache
def every_test_name() -> frozenset[str]:
    return frozenset(name for path in (REPO / "tests").rglob("test_*.py") for name in defined_names(path))


def resolve(path: str) -> Path | None:
    """Where a doc's relative path points: the repo root (``tests/``, ``src/``, ``scripts/``...) or, for a path
    starting with a subpackage (``train/...``, ``projections/...``), the package. None: another project's path."""
    first = path.split("/", 1)[0]
    for root in (REPO, PACKAGE):
        if (root / first).is_dir():
            return root / path
    return None


def dotted_target(dotted: str) -> str | None:
    """None if ``lorazoo.a.b.name`` is a module or a name defined in one, else what is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = REPO / "src" / Path(*parts[:cut])
        module = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if module.is_file():
            rest = parts[cut:]
            if not rest or rest[0] in defined_names(module):
                return None
            return f"{'.'.join(parts[:cut])} defines no {rest[0]}"
    return f"no module {dotted}"


def broken_references(text: str) -> list[str]:
    """``line N: what`` for every reference in ``text`` that does not resolve."""
    broken = []
    for number, line in enumerate(text.splitlines(), 1):
        last_file: Path | None = None
        for match in REFERENCE.finditer(line):
            problem = None
            if match["path"]:
                target = resolve(match["path"])
                last_file = target
                if target is None or match["path"] in EXAMPLE_FILES:
                    continue
                if not target.is_file():
                    problem = f"{match['path']} does not exist"
                elif match["name"] and match["name"] not in defined_names(target):
                    problem = f"{match['path']} defines no {match['name']}"
            elif match["continued"]:
                if last_file is None:
                    problem = f"::{match['continued']} follows no file path on its line"
                elif last_file.is_file() and match["continued"] not in defined_names(last_file):
                    problem = f"{last_file.relative_to(REPO)} defines no {match['continued']}"
            elif match["bare"]:
                if match["bare"] not in every_test_name():
                    problem = f"no test file under tests/ defines {match['bare']}"
            else:
                problem = dotted_target(match["dotted"])
            if problem:
                broken.append(f"line {number}: {problem}")
    return broken


@pytest.mark.parametrize("doc", DOCS)
def test_every_path_test_and_module_the_docs_name_exists(doc):
    broken = broken_references((REPO / doc).read_text())
    assert not broken, f"{doc} names what is not there: " + "; ".join(broken)


@pytest.mark.parametrize(
    "line",
    [
        "`tests/core/test_no_such_file.py`",  # a moved or deleted test file
        "`tests/core/test_core.py::test_no_such_test`",  # a renamed test
        "`tests/core/test_core.py::test_bad_input_is_a_one_line_lorazoo_error`, `::test_no_such_test`",  # continued
        "`::test_bad_input_is_a_one_line_lorazoo_error` with no file before it",
        "`src/lorazoo/train/run_dir.py`",  # a moved source file, from the repo root
        "`train/model_fit.py`",  # a moved source file, from the package
        "`scripts/no_such_script.py`",
        "`configs/hydra/sweeper/no_such_search.yaml`",  # a config, script or data file
        "`test_no_such_test_anywhere`",  # a bare test name
        "`lorazoo.train.no_such_module.build`",  # a dotted reference
        "`lorazoo.quantized.no_such_function`",
    ],
)
def test_a_wrong_reference_of_each_kind_is_reported(line):
    assert len(broken_references(line)) == 1, line


def test_right_references_of_each_kind_pass():
    line = (
        "`tests/core/test_core.py::test_bad_input_is_a_one_line_lorazoo_error`, `::test_load_into_a_different_base_"
        "names_the_module`, `src/lorazoo/model.py`, `projections/rng.py`, `test_same_seed_same_metrics_and_adapter`, "
        "`lorazoo.quantized.requantization_bound`, `lorazoo.train`, vllm/config/lora.py, `.lorazoo.lock`, "
        "`src/lorazoo/projections/halfshared.py` (an example to create), `configs/hydra/sweeper/lr_search.yaml`, "
        "`scripts/ci_floors.sh`, author/repo@commit:scripts/glue.sh"
    )
    assert broken_references(line) == []


# ----------------------------------------------------------------------------------------- README module table


def module_table() -> list[tuple[str, str]]:
    """(first cell without backticks, whole row) of every row of the README's ``| module | job |`` table."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| module | job |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append((line.split("|")[1].strip().strip("`"), line))
    return rows


def expected_rows() -> dict[str, Path]:
    """Row name → file or package dir: one row per module of an expanded package, one per other package."""
    rows = {}
    for package in EXPANDED_PACKAGES:
        prefix = package.relative_to(PACKAGE).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        for child in sorted(package.iterdir()):
            if child in EXPANDED_PACKAGES:
                continue
            if child.suffix == ".py":
                rows[prefix + child.name] = child
            elif (child / "__init__.py").is_file():
                rows[prefix + child.name + "/"] = child
    return rows


def module_of(row: str) -> str:
    name = "lorazoo." + row.removesuffix("/").removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def test_the_module_table_has_one_row_per_module_and_package():
    named = [name for name, _ in module_table()]
    expected = expected_rows()
    assert len(named) == len(set(named)), f"rows named twice: {sorted(n for n in named if named.count(n) > 1)}"
    missing, stale = sorted(set(expected) - set(named)), sorted(set(named) - set(expected))
    assert not missing and not stale, f"README module table: rows missing {missing}; rows for no module {stale}"


def test_each_package_row_names_every_module_in_it():
    expected = expected_rows()
    unnamed = [
        f"{name}: {path.relative_to(expected[name]).as_posix()}"
        for name, row in module_table()
        if name.endswith("/") and name in expected
        for path in sorted(expected[name].rglob("*.py"))
        if path.name != "__init__.py" and f"`{path.relative_to(expected[name]).as_posix()}`" not in row
    ]
    assert not unnamed, "README module table: package rows that do not name these modules: " + "; ".join(unnamed)


def test_the_module_table_runs_bottom_to_top_through_the_layers():
    from test_architecture import layer_of  # here, not at the top: the path tests above do not need the graph

    order = [(layer_of(module_of(name)), name) for name, _ in module_table()]
    out_of_order = [f"{b[1]} after {a[1]}" for a, b in zip(order, order[1:]) if b[0] < a[0]]
    assert not out_of_order, "README module table is not in the layer order of LAYERS: " + "; ".join(out_of_order)


# ----------------------------------------------------------------------------------- CONTRIBUTING layer chain


def short_name(module: str) -> str:
    """A LAYERS entry as the chain writes it: the path below src/lorazoo, a package with a trailing slash."""
    if module == "lorazoo":
        return "lorazoo"
    path = module.removeprefix("lorazoo.").replace(".", "/")
    return path + "/" if (PACKAGE / path / "__init__.py").is_file() else path


def contributing_chain() -> list[set[str]]:
    """The layers of CONTRIBUTING's chain: the code block after 'imports flow one way', notes in parentheses
    dropped, split on → and commas."""
    text = (REPO / "CONTRIBUTING.md").read_text()
    block = text.split("imports flow one way", 1)[1].split("```", 2)[1]
    while "(" in block:  # innermost notes first, so nested parentheses go too
        block, count = re.subn(r"\([^()]*\)", "", block)
        assert count, f"unbalanced parentheses in CONTRIBUTING's layer chain: {block}"
    return [{name.strip() for name in layer.split(",")} for layer in block.split("→")]


def test_the_contributing_layer_chain_is_the_layers_of_the_architecture_test():
    from test_architecture import LAYERS

    expected = [{short_name(module) for module in layer} for layer in LAYERS]
    assert contributing_chain() == expected, "CONTRIBUTING's layer chain should read: " + " → ".join(
        ", ".join(sorted(layer)) for layer in expected
    )


# ------------------------------------------------------------------------------------ README supported versions


def pyproject_requirements() -> list[str]:
    """Every requirement string of pyproject (runtime and extras, lorazoo's own extras aside) and the Python one."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11 (the suite's CI)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [text for group in project["optional-dependencies"].values() for text in group]
    found = [f"python{project['requires-python']}", *project["dependencies"], *extras]
    return sorted({text for text in found if not text.startswith("lorazoo")})


def supported_versions() -> set[str]:
    """The first cells of the table in the README's ``## Supported versions`` section."""
    section = (REPO / "README.md").read_text().split("\n## Supported versions\n", 1)[1].split("\n## ", 1)[0]
    return {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}


def test_the_readme_states_every_floor_in_pyproject():
    stated, declared = supported_versions(), set(pyproject_requirements())
    missing, stale = sorted(declared - stated), sorted(stated - declared)
    assert not missing and not stale, f"README Supported versions: add rows {missing}; remove or update {stale}"


def test_the_readme_says_ci_proves_the_floors():
    section = (REPO / "README.md").read_text().split("\n## Supported versions\n", 1)[1].split("\n## ", 1)[0]
    assert "scripts/ci_floors.sh" in section and "scripts/floors.py" in section
    assert "scripts/ci_floors.sh" in (REPO / ".ci" / "run").read_text()  # ... and CI runs it
