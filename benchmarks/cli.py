"""The command line every benchmark shares: one parser builder, one finish of the parsed options, one writer.

A benchmark script declares only what it measures (its own options and its payload). Where its results go,
how many threads and which device it runs on, when it rewrites ``results/benchmarks.md`` and how its JSON file
is headed are decided here, the same way for every script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import lorazoo
from lorazoo.files import atomic_write_json

from . import common
from .report import write_report

LAYERS_HELP = "hidden layers (default: the model's; --quick: 4)"
QUICK_LAYERS = 4


def parser(
    doc: str, quick: str, *, model: bool = True, device: bool = True, dtype: bool = True, partial: bool = True
) -> argparse.ArgumentParser:
    """The options every benchmark takes; the script adds its own. ``quick`` says what --quick does there.

    ``model``: --model and --layers (the benchmarks that build a model); ``device``: --device, and --dtype
    unless ``dtype`` is false (a benchmark without a base model);
    ``partial``: --only and --report (the benchmarks over every projection, whose full run feeds the report).
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    if model:
        p.add_argument("--model", default="smollm2-135m", choices=sorted(common.MODELS))
        p.add_argument("--layers", type=int, default=None, help=LAYERS_HELP)
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help=common.THREADS_HELP)
    if device:
        common.add_device_args(p, dtype=dtype)
    p.add_argument("--out", type=Path, default=None, help="results dir (default results/benchmarks[/quick])")
    if partial:
        p.add_argument("--only", default="", help="comma-separated projection names (default: every registered one)")
        p.add_argument(
            "--report",
            type=Path,
            default=None,
            help="markdown report to rewrite (default: results/benchmarks.md after a full default CPU run only)",
        )
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None, full_run: Sequence[str] = ()) -> argparse.Namespace:
    """Parse ``argv`` and apply the shared options: threads, device, --quick's layers, --out and --report.

    Only a full default run rewrites the report: not --quick, not --only, not --out, on the CPU, and every
    option named in ``full_run`` (what fixes the benchmarked shape) at its default; a partial run, a run
    written elsewhere or a GPU run leaves results/benchmarks.md alone.
    """
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if "device" in args:
        common.use_device(args)
    if args.quick and "layers" in args:
        args.layers = args.layers or QUICK_LAYERS
    default_out = args.out is None
    if default_out:
        args.out = common.RESULTS_DIR / "quick" if args.quick else common.RESULTS_DIR
    if "report" in args and args.report is None and default_out and not args.quick and not args.only:
        on_cpu = getattr(args, "device", "cpu") == "cpu"
        if on_cpu and all(getattr(args, key) == p.get_default(key) for key in full_run):
            args.report = common.REPORT_PATH
    return args


def projections(args: argparse.Namespace) -> list[str]:
    """--only as a list (empty: every registered projection)."""
    return [name for name in args.only.split(",") if name]


def result_name(benchmark: str, only: str) -> str:
    """``benchmark`` for a run over every projection; a partial run (``--only a,b``) gets its own file name."""
    return benchmark + (f"--only-{only.replace(',', '+')}" if only else "")


def publish(args: argparse.Namespace, benchmark: str, conditions: dict[str, Any], records: list[Any]) -> dict[str, Any]:
    """Write ``<--out>/<name>.json``: the benchmark, its command and the machine, then what the script ran
    under (``conditions``) and its ``records``; with --report, regenerate that report with this file as the
    benchmark's section. Returns what was written.

    A partial run's file is named after its --only (``train_step--only-vera``): it never overwrites the full
    run's file, and the default report only ever reads the full runs' files."""
    name = result_name(benchmark, getattr(args, "only", ""))
    data = {"benchmark": benchmark, "command": command_line(), "machine": machine(), **conditions, "records": records}
    atomic_write_json(Path(args.out) / f"{name}.json", data)
    report = getattr(args, "report", None)
    if report:
        write_report(args.out, report, files={benchmark: name})
    return data


def command_line() -> str:
    """The command that ran this benchmark, as a reader would retype it."""
    script = "python -m benchmarks." + Path(sys.argv[0]).stem
    return script + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")


def machine() -> dict[str, Any]:
    """What the timings depend on: CPU, threads, library versions, GPU and how loaded the machine was."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:  # pragma: no cover
        peft_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft_version,
        "lorazoo": lorazoo.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        # 1/5/15-min load averages when the results were written: how shared the machine was
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
