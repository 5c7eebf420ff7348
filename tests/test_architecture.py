"""The import graph of src/lorazoo: no circles, and imports flow one way through the layers.

Read from the source with ``ast`` (every import statement, including ones inside functions, since a
lazy import is still a dependency), so the test fails the moment a module reaches back up a layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lorazoo"

# Lower layers never import higher ones. files is pure serialization of (config, layout, tensors), so it sits
# below the checked read of an adapter directory (adapter_dir) and the lifecycle (model.save_adapter /
# load_adapter) that call it, and knows no model; adapter_dir builds stand-alone projections and never a model.
LAYERS: list[tuple[str, ...]] = [
    (
        "lorazoo.version",
        "lorazoo.errors",
        "lorazoo.jsonsafe",
        "lorazoo.sharding",
        "lorazoo.interop",
    ),  # sharding, interop: torch / transformers only
    ("lorazoo.packaged", "lorazoo.gguf_cache"),  # packaged model directories; GGUF copies (torch only when converting)
    ("lorazoo.config",),
    ("lorazoo.layout",),
    ("lorazoo.projections",),  # the package and every module in it
    ("lorazoo.files", "lorazoo.quantized", "lorazoo.rank_limit"),  # quantized: bitsandbytes weights; rank_limit: SVD
    ("lorazoo.integrity",),  # checks a saved adapter against what its config regenerates; used by model
    ("lorazoo.adapted_layers",),
    ("lorazoo.targets", "lorazoo.mixed"),
    ("lorazoo.adapter_dir",),  # reads and checks a saved adapter directory before model installs it
    ("lorazoo.peft_config",),  # what PEFT auto classes need from an export
    ("lorazoo.model",),
    ("lorazoo.counting",),
    ("lorazoo",),  # the public API (__init__)
    ("lorazoo.export_peft",),  # lorazoo-export: an adapter dir -> a PEFT LoRA adapter (core only, no train/)
    # train/, bottom to top: each subpackage may import only the ones listed above it
    ("lorazoo.train.errors",),
    ("lorazoo.train.options",),  # typed views of the config groups, parsed once
    ("lorazoo.train.records",),  # the run dir, its checkpoints and records
    ("lorazoo.train.loading",),  # base model, quantisation, hub, init adapter
    ("lorazoo.train.evaluation",),  # metrics, lm-eval harness
    ("lorazoo.train.tasks",),  # datasets and their metrics
    ("lorazoo.train.engine",),  # the Trainer and what hooks into it
    ("lorazoo.train.config",),  # whole-config checks that read every component's declarations
    ("lorazoo.train.sweep",),  # Optuna, Slurm, the sweep objective
    ("lorazoo.train.stages",),  # one stage of a run each: setup, claim, plan, build, training, record
    ("lorazoo.train.runner",),  # one run, stage by stage
    ("lorazoo.train",),
    (
        "lorazoo.compare",
        "lorazoo.rerun",
        "lorazoo.curves",
        "lorazoo.evaluate",
        "lorazoo.counting_tables",
    ),  # command-line tools over run dirs and configs (read train records, compose configs)
    ("lorazoo.study",),  # the fair study (lorazoo-fair): plans run.py sweeps, reads their records through compare
    ("lorazoo.cli_hints",),
    ("lorazoo.cli",),
]
CORE_FORBIDDEN = ("hydra", "omegaconf", "wandb", "lorazoo.train", "lorazoo.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (SRC / Path(*name.split(".")) / "__init__.py").is_file()


def is_module(name: str) -> bool:
    return is_package(name) or (SRC / Path(*name.split("."))).with_suffix(".py").is_file()


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (lorazoo submodules resolved to their files)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            subs = [f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}")]
            found.update(subs)
            if len(subs) < len(node.names):  # some names are attributes of ``base`` itself
                found.add(base)
    return found


def lorazoo_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[module_name(path)] = imports_of(path)
    return graph


def layer_of(name: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or (prefix != "lorazoo" and name.startswith(prefix + "."))
            if matches and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best < 0:
        raise AssertionError(f"module {name} is in no layer of tests/test_architecture.py::LAYERS; add it there")
    return best


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


MAX_FUNCTION_LINES = 80  # a longer function does several jobs: split it into named steps


def long_functions(source: str, where: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``where:name (lines)`` of every function or method (nested ones too) spanning more than ``limit`` lines,
    counted from its ``def`` to its last line."""
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                found.append(f"{where}:{node.name} ({lines} lines)")
    return found


def test_the_graph_reader_sees_relative_and_lazy_imports():
    """Guard against a reader that finds nothing (which would make the tests below pass vacuously)."""
    graph = lorazoo_graph()
    assert "lorazoo.adapted_layers" in graph["lorazoo.model"]
    assert "lorazoo.projections.base" in graph["lorazoo.projections.lora"]
    assert "lorazoo.projections.rng" in graph["lorazoo.projections.base"]  # `from . import rng`
    assert "lorazoo.train" in graph["lorazoo.cli"]  # imported inside main()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = find_cycle(lorazoo_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_flow_one_way():
    graph = lorazoo_graph()
    upward = []
    for name, deps in graph.items():
        for dep in deps:
            if dep in graph and layer_of(dep) > layer_of(name):
                upward.append(f"{name} imports {dep}")
    assert not upward, "imports going back up a layer: " + "; ".join(sorted(upward))


@pytest.mark.parametrize("name", sorted(n for n in lorazoo_graph() if layer_of(n) < layer_of("lorazoo.train.errors")))
def test_core_never_imports_train_hydra_or_wandb(name):
    bad = sorted(d for d in lorazoo_graph()[name] if d.startswith(CORE_FORBIDDEN))
    assert not bad, f"core module {name} imports {bad}"


def test_no_function_is_longer_than_80_lines():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))  # def + 80 lines: one too many
    assert long_functions(f"class C:\n  def long(self):\n{body}\n", "probe") == ["probe:long (81 lines)"]
    assert long_functions(f"def fits():\n{body[: body.rindex(chr(10))]}\n", "probe") == []
    found = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in long_functions(path.read_text(), str(path.relative_to(SRC)))
    ]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): " + "; ".join(found)
