"""Time of producing θ_D alone (forward) and of its backward, for every projection on a 7B-shaped layout.

The layout is Llama-2-7B with every linear layer adapted at rank 4 (D = 9,994,240), built from shapes
with ``Layout.from_shapes``: no weights, no model. Projections are timed interleaved, round-robin; a
projection whose first forward or backward exceeds ``--cap`` seconds is stopped and reported (the dense
Gaussian projection regenerates D·d random numbers per call, 2.3·10^11 at d = 23,040).

    python -m benchmarks.reconstruct           # the 7B layout
    python -m benchmarks.reconstruct --quick   # 4 of its 32 blocks
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from lorazoo import Layout
from lorazoo.projections import build_projection

from . import cli, common


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(__doc__, quick="4 blocks, 5 repeats, 10 s cap and budget", model=False, dtype=False)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--blocks", type=int, default=32, help="transformer blocks of the 7B layout to keep")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cap", type=float, default=30.0, help="seconds a first forward/backward may take")
    p.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds of timing per projection; slower ones get fewer repeats (n is reported)",
    )
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = cli.parse(build_parser(), argv, full_run=("blocks",))
    if args.quick:
        args.blocks, args.repeats, args.cap = min(args.blocks, 4), min(args.repeats, 5), min(args.cap, 10.0)
        args.budget = min(args.budget, 10.0)
    return args


class Case:
    """One projection on the layout: its θ_D forward and backward, with a fixed upstream gradient."""

    def __init__(self, setting: common.Setting, layout: Layout, seed: int):
        self.setting = setting
        start = time.perf_counter()
        config = setting.adapter_config(seed=seed)
        config.rank = layout[0].rank  # the layout fixes the rank
        self.projection = build_projection(layout, config).to(common.DEVICE)
        self.projection.set_active(True)
        self.build_s = time.perf_counter() - start
        self.grad = torch.randn(layout.D, generator=torch.Generator().manual_seed(seed)).to(common.DEVICE)
        self.theta_D: torch.Tensor | None = None
        self.forward_times: list[float] = []
        self.backward_times: list[float] = []
        self.status = "ok"

    def forward(self) -> None:
        self.theta_D = self.projection()

    def backward(self) -> None:
        for p in self.projection.parameters():
            p.grad = None
        if self.theta_D.requires_grad:
            self.theta_D.backward(self.grad)
        self.theta_D = None


def run(args: argparse.Namespace, cases: list[Case]) -> None:
    for round_index in range(args.warmup + args.repeats):
        for case in common.round_robin(cases, round_index):
            if case.status != "ok" or sum(case.forward_times) + sum(case.backward_times) > args.budget:
                continue
            try:
                with common.time_limit(args.cap if round_index == 0 else None):
                    forward = common.timed(case.forward)
                with common.time_limit(args.cap if round_index == 0 else None):
                    backward = common.timed(case.backward)
            except common.TimeLimitExceeded:
                case.status, case.theta_D = f"> {args.cap:g} s (stopped)", None
                continue
            if round_index >= args.warmup:
                case.forward_times.append(forward)
                case.backward_times.append(backward)
        gc.collect()
        print(f"round {round_index + 1}/{args.warmup + args.repeats} done", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    shapes = common.llama2_7b_shapes()[: 7 * args.blocks]
    layout = Layout.from_shapes(shapes, args.rank)
    settings = common.settings_for(common.Shapes(shapes), cli.projections(args))
    cases = []
    for setting in settings:
        print(f"building {setting.key}", file=sys.stderr, flush=True)
        cases.append(Case(setting, layout, args.seed))
    run(args, cases)

    records = []
    for case in cases:
        f, b = common.summarize(case.forward_times), common.summarize(case.backward_times)
        records.append(
            {
                "benchmark": "reconstruct",
                "implementation": f"lorazoo/{case.setting.key}",
                "projection": case.setting.projection,
                "setting": case.setting.describe().replace(f"r={case.setting.rank}", f"r={args.rank}"),
                "note": case.setting.note,
                "trainable": case.projection.d,
                "status": case.status,
                "build_s": case.build_s,
                **{f"forward_{k}": v for k, v in f.items()},
                **{f"backward_{k}": v for k, v in b.items()},
            }
        )
    conditions = {
        "rank": args.rank,
        "blocks": args.blocks,
        "D": layout.D,
        "repeats": args.repeats,
        "cap_s": args.cap,
        "device": str(common.DEVICE),
        "budget_s": args.budget,
    }
    return cli.publish(args, "reconstruct", conditions, records)


if __name__ == "__main__":
    main()
