"""Every benchmark script takes the shared options from ONE parser builder and writes its results through ONE
writer (benchmarks/cli.py): same names, defaults and meaning everywhere, the same head on every results file,
and only a full default CPU run rewrites results/benchmarks.md."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import benchmarks  # noqa: E402
from benchmarks import cli, common  # noqa: E402


def benchmark_scripts() -> dict[str, ModuleType]:
    """Every module of benchmarks/ that runs as ``python -m benchmarks.<name>`` with a ``main``."""
    found = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        module = importlib.import_module(f"benchmarks.{info.name}")
        if callable(getattr(module, "main", None)):
            found[info.name] = module
    return found


SCRIPTS = benchmark_scripts()
# the scripts over every projection: --only and --report, and a full default run that feeds the report
FULL_RUN_SHAPE = {"inference": ["--model", "tiny"], "train_step": ["--model", "tiny"], "reconstruct": ["--blocks", "8"]}


def definition(action) -> tuple:
    return (action.dest, action.default, action.type, action.choices, action.nargs, action.const, action.help)


def test_the_four_benchmarks_are_found():
    assert set(SCRIPTS) == {"inference", "train_step", "reconstruct", "serving"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_takes_the_shared_options_from_the_one_builder(name):
    """Each option a script shares with cli.parser is cli.parser's own definition (name, default, type, help),
    and every script has the options that every benchmark needs."""
    shared = {a.option_strings[0]: a for a in cli.parser("x", "y")._actions if a.option_strings}
    ours = {a.option_strings[0]: a for a in SCRIPTS[name].build_parser()._actions if a.option_strings}
    assert {"--quick", "--seed", "--threads", "--out"} <= set(ours)
    for option in set(ours) & set(shared) - {"-h", "--quick"}:
        assert definition(ours[option]) == definition(shared[option]), option
    partial = {"--only", "--report"} <= set(ours)
    assert partial == (name in FULL_RUN_SHAPE)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_script_applies_the_shared_options(name, tmp_path):
    args = SCRIPTS[name].parse_args(["--quick", "--seed", "7", "--threads", "1", "--out", str(tmp_path)])
    assert args.out == tmp_path and args.seed == 7 and args.quick
    if "layers" in args:  # the benchmarks that build a model: --quick cuts it to 4 layers
        assert args.layers == cli.QUICK_LAYERS
    default = SCRIPTS[name].parse_args(["--quick"])
    assert default.out == common.RESULTS_DIR / "quick" and getattr(default, "report", None) is None
    assert SCRIPTS[name].parse_args([]).out == common.RESULTS_DIR


@pytest.mark.parametrize("name", sorted(FULL_RUN_SHAPE))
@pytest.mark.parametrize(
    "how", ["--only", "--out", "--quick", "shape"], ids=["partial", "elsewhere", "quick", "another-shape"]
)
def test_only_a_full_default_run_rewrites_the_report(name, how):
    script = SCRIPTS[name]
    assert script.parse_args([]).report == common.REPORT_PATH
    argv = {"--only": ["--only", "lora"], "--out": ["--out", "/nonexistent"], "--quick": ["--quick"]}
    args = script.parse_args(argv.get(how, FULL_RUN_SHAPE[name]))
    assert args.report is None
    explicit = script.parse_args([*argv.get(how, FULL_RUN_SHAPE[name]), "--report", "/tmp/r.md"])
    assert explicit.report == Path("/tmp/r.md")  # asked for: written


def test_publish_heads_the_file_and_names_a_partial_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/reconstruct.py", "--only", "lora,vera"])
    args = SCRIPTS["reconstruct"].parse_args(["--only", "lora,vera", "--out", str(tmp_path)])
    cli.publish(args, "reconstruct", {"rank": 4}, [])
    path = tmp_path / "reconstruct--only-lora+vera.json"
    assert cli.result_name("reconstruct", "") == "reconstruct"  # the full run's file, which the report reads
    data = json.loads(path.read_text())
    assert data["benchmark"] == "reconstruct" and data["rank"] == 4 and data["records"] == []
    assert data["command"] == "python -m benchmarks.reconstruct --only lora,vera"
    assert {"cpu", "cores", "torch_threads", "torch", "transformers", "peft", "lorazoo"} <= set(data["machine"])
    assert not (tmp_path / "reconstruct.json").exists() and not list(tmp_path.glob("*.md"))


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_option_a_script_takes_changes_what_it_measures(name, capsys):
    """No accepted-and-ignored options: --dtype (the base model's dtype) only where there is a base model;
    reconstruct, which times θ_D alone, refuses it instead of running fp32 under a bf16 label."""
    has_base = name != "reconstruct"
    ours = {a.option_strings[0] for a in SCRIPTS[name].build_parser()._actions if a.option_strings}
    assert ("--dtype" in ours) == (has_base and "--device" in ours)
    if "--dtype" not in ours:
        with pytest.raises(SystemExit):
            SCRIPTS[name].parse_args(["--dtype", "bfloat16"])
        assert "unrecognized arguments: --dtype" in capsys.readouterr().err
