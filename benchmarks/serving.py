"""Serving k adapters at once: one mixed-adapter batch (``adapter_names``) vs k sequential single-adapter
batches, for lorazoo and PEFT LoRA, and lorazoo's mixed batch across different projections.

Every model sits on one set of base weights (SmolLM2-135M's shape, random weights). A round serves the same
k × rows prompts of ``seq`` tokens each way; throughput = k · rows · seq / forward time (prefill, under
``torch.no_grad()``, logits of the last position only, as a server's prefill needs). Implementations run interleaved, round-robin; medians are reported.

    python -m benchmarks.serving            # SmolLM2-135M shape, 30 layers, k = 4
    python -m benchmarks.serving --quick    # 4 layers, fewer rounds
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lorazoo

from . import cli, common, report
from .inference import interleaved, perturb

# one adapter per projection for the cross-method mixed batch (paper-style settings at SmolLM2's q, v sizes)
MIXED_PROJECTIONS = ("lora", "unilora", "vera", "vblora", "prolora", "tied", "fastfood", "gaussian")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__, quick="4 layers, at most 3 timed rounds", device=False, partial=False)
    p.add_argument("--adapters", type=int, default=4, help="k: adapters served together")
    p.add_argument("--rows", type=int, default=2, help="prompts per adapter")
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cap", type=float, default=60.0, help="drop a way of serving whose first call exceeds this (s)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = cli.parse(build_parser(), argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    return args


def lorazoo_lora_adapters(base: nn.Module, k: int, rank: int, seed: int) -> nn.Module:
    """k LoRA adapters (r, α = 2r, q/v: the PEFT twin's setting) on a shared copy of ``base``."""
    setting = common.peft_lora_baseline(rank)
    model = lorazoo.attach(common.shared_copy(base), setting.adapter_config(seed=seed), adapter_name="a0")
    for i in range(1, k):
        model.add_adapter(f"a{i}", setting.adapter_config(seed=seed + i))
    for i in range(k):
        model.set_adapter(f"a{i}")
        perturb(model, seed + i)
    return model.eval()


def peft_lora_adapters(base: nn.Module, k: int, rank: int, seed: int) -> nn.Module:
    import peft

    config = common.peft_config(common.peft_lora_baseline(rank))
    torch.manual_seed(seed)
    model = peft.get_peft_model(common.shared_copy(base), config, adapter_name="a0")
    for i in range(1, k):
        model.add_adapter(f"a{i}", config)
    for i in range(k):
        model.set_adapter(f"a{i}")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed + i)
            for name, p in model.named_parameters():
                if f".a{i}." in name:
                    p.add_(0.02 * torch.randn(p.shape, generator=gen).to(p))
    return model.eval()


def lorazoo_mixed_projections(base: nn.Module, k: int, seed: int) -> tuple[nn.Module, list[str]]:
    """k adapters, each a different projection (paper-style settings), on a shared copy of ``base``."""
    shapes = common.Shapes(common.target_shapes(base))
    settings = [common.settings_for(shapes, [name])[0] for name in MIXED_PROJECTIONS[:k]]
    model = lorazoo.attach(
        common.shared_copy(base), settings[0].adapter_config(seed=seed), adapter_name=settings[0].key
    )
    for i, setting in enumerate(settings[1:], start=1):
        model.add_adapter(setting.key, setting.adapter_config(seed=seed + i))
    for i, setting in enumerate(settings):
        model.set_adapter(setting.key)
        perturb(model, seed + i)
    return model.eval(), [s.key for s in settings]


def sequential(model: nn.Module, names: list[str], batches: list[torch.Tensor]) -> Callable[[], Any]:
    """One single-adapter forward per adapter (its own rows), switching the active adapter in between."""

    def run() -> None:
        for name, ids in zip(names, batches):
            model.set_adapter(name)
            model(input_ids=ids, logits_to_keep=1)

    return run


def check_rows(
    model: nn.Module, names: list[str], row_names: list[str], ids: torch.Tensor, batches: list[torch.Tensor]
) -> float:
    """max |mixed − single-adapter| logits over all rows (the mixed batch serves what each adapter alone would)."""
    mixed = model(input_ids=ids, adapter_names=row_names).logits
    worst = 0.0
    for i, name in enumerate(names):
        model.set_adapter(name)
        single = model(input_ids=batches[i]).logits
        rows = [r for r, n in enumerate(row_names) if n == name]
        worst = max(worst, float((mixed[rows] - single).abs().max()))
    return worst


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    k, rows, seq = args.adapters, args.rows, args.seq
    base = common.build_base(args.model, args.layers, args.seed).eval()
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = [torch.randint(0, base.config.vocab_size, (rows, seq), generator=gen) for _ in range(k)]
    ids = torch.cat(batches)
    lora_names = [f"a{i}" for i in range(k)]
    lora_rows = [n for n in lora_names for _ in range(rows)]

    ours = lorazoo_lora_adapters(base, k, args.rank, args.seed)
    theirs = peft_lora_adapters(base, k, args.rank, args.seed)
    mixed_model, mixed_names = lorazoo_mixed_projections(base, k, args.seed)
    mixed_rows = [n for n in mixed_names for _ in range(rows)]
    fns = {
        "lorazoo/lora mixed batch": lambda: ours(input_ids=ids, adapter_names=lora_rows, logits_to_keep=1),
        "lorazoo/lora sequential": sequential(ours, lora_names, batches),
        "peft/lora mixed batch": lambda: theirs(input_ids=ids, adapter_names=lora_rows, logits_to_keep=1),
        "peft/lora sequential": sequential(theirs, lora_names, batches),
        "lorazoo/mixed projections mixed batch": lambda: mixed_model(
            input_ids=ids, adapter_names=mixed_rows, logits_to_keep=1
        ),
        "lorazoo/mixed projections sequential": sequential(mixed_model, mixed_names, batches),
    }
    with torch.no_grad():
        checks = {
            "lorazoo/lora": check_rows(ours, lora_names, lora_rows, ids, batches),
            "peft/lora": check_rows(theirs, lora_names, lora_rows, ids, batches),
            "lorazoo/mixed projections": check_rows(mixed_model, mixed_names, mixed_rows, ids, batches),
        }
        print(f"serving: {len(fns)} ways, k={k}, {rows}×{seq} tokens per adapter", file=sys.stderr, flush=True)
        dropped: dict[str, str] = {}
        stats = interleaved(fns, args.repeats, args.warmup, args.cap, dropped)
    tokens = k * rows * seq
    peft_mixed = stats.get("peft/lora mixed batch", {}).get("median_ms")
    records = []
    for key, entry in stats.items():
        family = key.rsplit(" ", 2)[0] if key.endswith("mixed batch") else key.rsplit(" ", 1)[0]
        sequential_ms = stats.get(f"{family} sequential", {}).get("median_ms")
        median = entry.get("median_ms")
        records.append(
            {
                "implementation": key,
                "status": dropped.get(key, "ok"),
                **entry,
                "tokens": tokens,
                "tokens_per_s": tokens / (median / 1e3) if median else None,
                "speedup_vs_sequential": sequential_ms / median if median and sequential_ms else None,
                "speedup_vs_peft_mixed": peft_mixed / median if median and peft_mixed else None,
                "max_abs_diff_vs_single": checks.get(family),
            }
        )
    conditions = {
        "model": {
            "name": args.model,
            "layers": base.config.num_hidden_layers,
            "adapters": k,
            "rows": rows,
            "seq": seq,
            "rank": args.rank,
            "targets": common.TARGETS,
            "projections": mixed_names,
        },
        "repeats": args.repeats,
    }
    data = cli.publish(args, "serving", conditions, records)
    write_markdown(data, args.out / "serving.md")
    for r in records:
        print(
            f"{r['implementation']:40s} {common.fmt(r.get('median_ms'), '.1f'):>8} ms  "
            f"{common.fmt(r.get('tokens_per_s'), '.0f'):>7} tok/s  × seq {common.fmt(r.get('speedup_vs_sequential'))}  "
            f"× peft mixed {common.fmt(r.get('speedup_vs_peft_mixed'))}",
            file=sys.stderr,
        )
    return data


def write_markdown(data: dict[str, Any], path: Path) -> Path:
    from lorazoo.files import atomic_write

    text = "\n".join(report.serving_section(data))
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
