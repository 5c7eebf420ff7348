"""Inference speed: a merged lorazoo model vs the base (forward pass and greedy generation), and the
overhead of running every projection unmerged (plus PEFT LoRA unmerged for reference).

The merged model owns its own (merged) weights; the base and every unmerged model share the base weights.
All models run interleaved, round-robin, under ``torch.no_grad()``; medians are reported.

    python -m benchmarks.inference            # SmolLM2-135M shape, 30 layers
    python -m benchmarks.inference --quick    # 4 layers
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from . import cli, common
from .common import Impl, Setting

GENERATE_KEYS = (
    "base",
    "lorazoo/lora merged",
    "lorazoo/lora unmerged",
    "lorazoo/unilora unmerged",
    "peft/lora unmerged",
)


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__, quick="4 layers")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (forward); generation uses half")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--cap", type=float, default=30.0, help="drop a model whose first call exceeds this (s)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return cli.parse(build_parser(), argv, full_run=("model",))


@torch.no_grad()
def perturb(model: nn.Module, seed: int, scale: float = 0.02) -> None:
    """Move every trainable parameter off its init (ΔW ≠ 0), reproducibly."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device))


def build_models(args: argparse.Namespace, base: nn.Module) -> tuple[dict[str, nn.Module], dict[str, Setting], str]:
    shapes = common.Shapes(common.target_shapes(base))
    settings = common.settings_for(shapes, cli.projections(args))
    lora = next((s for s in common.settings_for(shapes, ["lora"])), None)
    models: dict[str, nn.Module] = {"base": base}
    used: dict[str, Setting] = {}
    for setting in settings:
        model = Impl("lorazoo", setting).build(common.shared_copy(base), args.seed).eval()
        perturb(model, args.seed)
        models[f"lorazoo/{setting.key} unmerged"], used[f"lorazoo/{setting.key} unmerged"] = model, setting
    peft_model = Impl("peft", common.peft_lora_baseline(lora.rank)).build(common.shared_copy(base), args.seed).eval()
    perturb(peft_model, args.seed)
    models["peft/lora unmerged"], used["peft/lora unmerged"] = peft_model, lora

    # the merged model gets its own weights: merging writes into W
    adapted = Impl("lorazoo", lora).build(copy.deepcopy(base), args.seed).eval()
    perturb(adapted, args.seed)
    ids = torch.randint(0, base.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(args.seed)).to(
        common.DEVICE
    )
    with torch.no_grad():
        before = adapted(input_ids=ids).logits
        merged = adapted.merge_and_unload()
        after = merged(input_ids=ids).logits
        baseline = base(input_ids=ids).logits
    check = (
        f"max |logits merged − unmerged| = {(after - before).abs().max().item():.1e} "
        f"(vs base: {(after - baseline).abs().max().item():.1e})"
    )
    models["lorazoo/lora merged"], used["lorazoo/lora merged"] = merged, lora
    return models, used, check


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int, cap: float, dropped: dict[str, str]
) -> dict[str, dict[str, float]]:
    """Round-robin timing; a model whose first call exceeds ``cap`` seconds is dropped (noted in ``dropped``)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for round_index in range(warmup + rounds):
        for key in common.round_robin(keys, round_index):
            if key in dropped:
                continue
            try:
                with common.time_limit(cap if round_index == 0 else None):
                    elapsed = common.timed(fns[key])
            except common.TimeLimitExceeded:
                dropped[key] = f"first call > {cap:g} s; dropped"
                continue
            if round_index >= warmup:
                times[key].append(elapsed)
    return {k: common.summarize(v) for k, v in times.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    base = common.build_base(args.model, args.layers, args.seed).eval()
    models, settings, check = build_models(args, base)
    gen = torch.Generator().manual_seed(args.seed + 1)
    batch = torch.randint(0, base.config.vocab_size, (args.batch, args.seq), generator=gen).to(common.DEVICE)
    prompt = torch.randint(0, base.config.vocab_size, (1, args.prompt), generator=gen).to(common.DEVICE)

    def forward(model: nn.Module) -> Callable[[], Any]:
        return lambda: model(input_ids=batch)

    def generate(model: nn.Module) -> Callable[[], Any]:
        return lambda: model.generate(
            input_ids=prompt,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            pad_token_id=0,
        )

    with torch.no_grad():
        print(f"forward: {len(models)} models", file=sys.stderr, flush=True)
        dropped: dict[str, str] = {}
        fwd = interleaved({k: forward(m) for k, m in models.items()}, args.repeats, args.warmup, args.cap, dropped)
        gen_models = {k: models[k] for k in GENERATE_KEYS if k in models}
        print(f"generate: {len(gen_models)} models", file=sys.stderr, flush=True)
        gen_stats = interleaved(
            {k: generate(m) for k, m in gen_models.items()}, max(args.repeats // 2, 1), 1, args.cap, dropped
        )

    records = []
    for key in models:
        f, g = fwd[key], gen_stats.get(key, {})
        tok_s = args.new_tokens / (g["median_ms"] / 1e3) if g else None
        base_tok_s = args.new_tokens / (gen_stats["base"]["median_ms"] / 1e3)
        if key in dropped:
            records.append(
                {
                    "benchmark": "inference",
                    "implementation": key,
                    "status": dropped[key],
                    "setting": settings[key].describe() if key in settings else "",
                }
            )
            continue
        records.append(
            {
                "benchmark": "inference",
                "implementation": key,
                "status": "ok",
                "setting": settings[key].describe() if key in settings else "",
                **{f"forward_{k}": v for k, v in f.items()},
                "forward_ratio_vs_base": f["median_ms"] / fwd["base"]["median_ms"],
                **({f"generate_{k}": v for k, v in g.items()} if g else {}),
                "generate_tokens_per_s": tok_s,
                "generate_ratio_vs_base": tok_s / base_tok_s if tok_s else None,
                "check": check if key == "lorazoo/lora merged" else "",
            }
        )
    conditions = {
        "model": {
            **common.model_record(args.model, base, args.batch, args.seq),
            "prompt": args.prompt,
            "new_tokens": args.new_tokens,
        },
        "repeats": args.repeats,
        **common.placement(),
    }
    return cli.publish(args, "inference", conditions, records)


if __name__ == "__main__":
    main()
