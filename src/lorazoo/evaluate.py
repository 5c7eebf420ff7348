"""Score a finished lorazoo run with lm-evaluation-harness (the run's base model + its adapter).

    lorazoo-evaluate <run dir> --tasks mmlu bbh_cot_fewshot [--num-fewshot N] [--limit N]
        [--batch-size B] [--include-path DIR ...] [--no-default-tasks] [--base DIR] [--out FILE]
    (or: python scripts/evaluate.py ..., python -m lorazoo.evaluate ...)

The base model comes from the run's resolved config (``<run dir>/.hydra/config.yaml``), else from the adapter's
``base_model_name_or_path``; ``--base`` points elsewhere (a local copy). Results go to a NEW file — ``--out`` or
``<run dir>/lm_eval/<UTC time>.json`` — and never change the run's own files (metrics.json stays as trained).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorazoo.errors import LoraZooError

if TYPE_CHECKING:  # the train/ imports run inside the functions: --help stays fast
    from lorazoo.train.evaluation.harness import LmEvalOptions
    from lorazoo.train.options import ModelOptions


def model_options(run_dir: Path, adapter_dir: Path, base: str | None) -> tuple[ModelOptions, int]:
    """ModelOptions and seed of the run (the seed regenerates a random ``tiny:`` base exactly)."""
    from omegaconf import OmegaConf

    from lorazoo.files import read_adapter_config
    from lorazoo.train.options import ModelOptions, from_node

    config, _ = read_adapter_config(adapter_dir)
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        cfg: Any = OmegaConf.load(hydra_config)
        opts, seed = from_node(ModelOptions, cfg.model, f"{hydra_config} model"), int(cfg.get("seed", config.seed))
    else:
        opts = ModelOptions(
            name="base",
            pretrained=config.base_model_name_or_path or "",
            task_type="causal_lm",
            target_modules=config.target_modules,
        )
        seed = config.seed
    if base:
        opts.pretrained, opts.tokenizer, opts.gguf_file = base, None, None
    if opts.task_type != "causal_lm":
        raise LoraZooError(f"run {run_dir} trained a {opts.task_type} model; lm-eval scores causal LMs only")
    if not opts.pretrained:
        raise LoraZooError(f"no base model recorded for {adapter_dir}; pass --base <local dir or hub id>")
    return opts, seed


def load_run_model(run_dir: Path, base: str | None) -> tuple[Any, Any, str]:
    """The run's base model with its adapter loaded, its tokenizer, and where the base came from."""
    from transformers import set_seed

    from lorazoo import load_adapter
    from lorazoo.train.loading.base_model import load_base

    adapter_dir = run_dir / "adapter" if (run_dir / "adapter").is_dir() else run_dir
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LoraZooError(f"{run_dir} holds no adapter (adapter/adapter_config.json); is it a finished lorazoo run?")
    opts, seed = model_options(run_dir, adapter_dir, base)
    set_seed(seed)
    model, tokenizer, source = load_base(opts, num_labels=0)
    return load_adapter(model, adapter_dir), tokenizer, source


def score_run(run_dir: Path, options: LmEvalOptions, out: Path, base: str | None, command: str) -> dict[str, Any]:
    """lm-eval on the run's adapted model, written to the NEW file ``out`` (never replaced); the summary."""
    from lorazoo.train.evaluation.harness import Harness

    if out.exists():
        raise LoraZooError(f"{out} exists; results files are never overwritten (pass another --out)")
    harness = Harness(options)
    harness.check_data()  # before the model loads: a bad name or missing data costs seconds
    model, tokenizer, source = load_run_model(run_dir, base)
    summary = harness.evaluate(model, tokenizer, out.parent if options.log_samples else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"run_dir": str(run_dir.resolve()), "base": source, "command": command, "lm_eval": summary}
    with open(out, "x", encoding="utf-8") as fh:  # exclusive create: never replaces a file
        json.dump(record, fh, indent=2)
    return summary


def invocation() -> list[str]:
    """How this process was started, for the record's command: the console script, ``python -m``, or the
    repo's scripts/evaluate.py (also what a call of ``main`` from Python records)."""
    if Path(sys.argv[0]).name == "lorazoo-evaluate":
        return ["lorazoo-evaluate"]
    if Path(sys.argv[0]).resolve() == Path(__file__).resolve():
        return ["python", "-m", "lorazoo.evaluate"]
    return ["python", "scripts/evaluate.py"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; its options are the ``eval.lm_eval`` options of a training run."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", nargs="+", required=True, help="lm-eval task or group names")
    parser.add_argument("--num-fewshot", type=int, default=None)
    parser.add_argument("--limit", type=float, default=None, help="examples per task (< 1: a fraction); checks only")
    parser.add_argument("--batch-size", default="8")
    parser.add_argument("--include-path", nargs="+", default=None, help="dirs of extra task yamls (local copies)")
    parser.add_argument("--no-default-tasks", action="store_true", help="index only --include-path (fast)")
    parser.add_argument("--log-samples", action="store_true")
    parser.add_argument("--confirm-run-unsafe-code", action="store_true", help="allow HumanEval-style code execution")
    parser.add_argument(
        "--allow-include-path-code", action="store_true", help="allow !function code in --include-path task yamls"
    )
    parser.add_argument("--base", help="local directory or hub id of the base model (default: the run's)")
    parser.add_argument("--out", type=Path, help="results file to create (default: <run dir>/lm_eval/<time>.json)")
    return parser.parse_args(argv)


def lm_eval_options(args: argparse.Namespace) -> LmEvalOptions:
    """The command line as the harness options a training run's ``eval.lm_eval`` would hold."""
    from lorazoo.train.evaluation.harness import LmEvalOptions

    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    batch = int(args.batch_size) if args.batch_size.isdigit() else args.batch_size
    return LmEvalOptions(
        tasks=args.tasks,
        num_fewshot=args.num_fewshot,
        limit=limit,
        batch_size=batch,
        include_path=args.include_path,
        include_defaults=not args.no_default_tasks,
        log_samples=args.log_samples,
        confirm_run_unsafe_code=args.confirm_run_unsafe_code,
        allow_include_path_code=args.allow_include_path_code,
    )


def main(argv: list[str] | None = None) -> int:
    """``lorazoo-evaluate``: score the run, print lm-eval's table; exit 2 with a one-line error when refused."""
    args = parse_args(argv)
    out = args.out or args.run_dir / "lm_eval" / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    command = " ".join(shlex.quote(a) for a in [*invocation(), *(argv or sys.argv[1:])])
    try:
        summary = score_run(args.run_dir, lm_eval_options(args), out, args.base, command)
    except (LoraZooError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from lm_eval.utils import make_table

    print(make_table(summary))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
