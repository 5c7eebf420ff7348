"""Full training steps (forward + backward + AdamW) of every lorazoo projection next to PEFT's implementations.

All implementations share ONE set of frozen base weights (``common.shared_copy``): same numbers, one copy in
memory. They run round-robin, one step each per round (the order rotates every round), so machine noise
hits all of them alike; we report medians over ``--steps`` rounds after ``--warmup`` rounds.

Peak memory (CPU) is measured in a forked child per implementation (a fresh address space, no import
cost): pin glibc's mmap threshold at 256 KiB (large buffers are unmapped when freed), return freed heap
to the OS, reset the peak-RSS counter (/proc/self/clear_refs), note the RSS,
attach the adapter and run 2 training steps; the number is peak RSS minus that RSS, i.e. adapter +
optimiser state + gradients + activations and autograd buffers of a step. The base's activations are the
same for every implementation, so the differences are the adapters'.

    python -m benchmarks.train_step            # SmolLM2-135M shape, 30 layers (the results in benchmarks.md)
    python -m benchmarks.train_step --quick    # 4 layers, < 3 min on 2 cores
    python -m benchmarks.train_step --profile lorazoo/vera   # torch.profiler table of one implementation's step
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from . import common
from .common import Impl

MEMORY_STEPS = 2
MMAP_THRESHOLD = 256 * 1024  # buffers ≥ 256 KiB are mapped/unmapped directly while measuring memory


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", choices=sorted(common.MODELS))
    p.add_argument("--layers", type=int, default=None, help="hidden layers (default: the model's; --quick: 4)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed rounds (each implementation steps once per round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--step-cap", type=float, default=30.0, help="drop an implementation whose first step exceeds this (s)")
    p.add_argument("--slow-factor", type=float, default=8.0,
                   help="after warm-up round 2, drop implementations slower than this × the median implementation")
    p.add_argument("--only", default="", help="comma-separated projection names (default: every registered one)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-implementation peak-RSS measurement")
    p.add_argument("--no-save", action="store_true", help="skip the adapter file sizes")
    p.add_argument("--quick", action="store_true", help="4 layers, 10 steps, 2 warm-up rounds, 10 s step cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help=common.THREADS_HELP)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--out", type=Path, default=None, help="results dir (default results/benchmarks[/quick])")
    p.add_argument("--report", type=Path, default=None, help="markdown report to rewrite (default: none for --quick)")
    p.add_argument("--profile", default="", help="profile this implementation key (e.g. lorazoo/vera) and exit")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.layers = args.layers or 4
        args.warmup = min(args.warmup, 2)
        args.steps = min(args.steps, 10)
        args.step_cap = min(args.step_cap, 10.0)
    if args.out is None:
        args.out = common.RESULTS_DIR / "quick" if args.quick else common.RESULTS_DIR
    if args.report is None and not args.quick and args.model == "smollm2-135m":
        args.report = common.REPORT_PATH
    return args


def plan(args: argparse.Namespace, base: nn.Module) -> tuple[list[Impl], dict[str, str], dict[str, str]]:
    shapes = common.Shapes(common.target_shapes(base))
    only = [n for n in args.only.split(",") if n]
    return common.implementations(common.settings_for(shapes, only))


def make_batch(vocab: int, batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids, "labels": ids.clone()}


class Runner:
    """One implementation: its model (on the shared base weights), AdamW and a step function."""

    def __init__(self, impl: Impl, base: nn.Module, lr: float, seed: int):
        self.impl = impl
        self.model = impl.build(common.shared_copy(base), seed)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.times: list[float] = []
        self.status = "ok"

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()


def run_timing(args: argparse.Namespace, runners: dict[str, Runner], batch: dict[str, torch.Tensor]) -> None:
    """Round-robin steps; an implementation far slower than the rest is dropped (and says so) after warm-up."""
    keys = list(runners)
    last: dict[str, float] = {}
    for round_index in range(args.warmup + args.steps):
        for key in common.round_robin(keys, round_index):
            runner = runners[key]
            if runner.status != "ok":
                continue
            try:
                with common.time_limit(args.step_cap if round_index == 0 else None):
                    last[key] = common.timed(lambda: runner.step(batch))
            except common.TimeLimitExceeded:
                runner.status = f"first step > {args.step_cap:g} s; dropped"
                runner.optimizer.zero_grad(set_to_none=True)
                continue
            if round_index >= args.warmup:
                runner.times.append(last[key])
        if round_index == min(1, args.warmup - 1):
            _drop_outliers(runners, last, args.slow_factor)
        gc.collect()
        print(f"round {round_index + 1}/{args.warmup + args.steps} done", file=sys.stderr, flush=True)


def _drop_outliers(runners: dict[str, Runner], last: dict[str, float], factor: float) -> None:
    times = {k: last[k] for k, r in runners.items() if r.status == "ok" and k in last}
    if len(times) < 3:
        return
    median = sorted(times.values())[len(times) // 2]
    for key, elapsed in times.items():
        if elapsed > factor * median:
            runners[key].status = f"{elapsed:.1f} s/step (> {factor:g}× the median implementation); dropped"
            runners[key].optimizer.zero_grad(set_to_none=True)


def measure_memory(args: argparse.Namespace, base: nn.Module, impl: Impl, batch: dict[str, torch.Tensor],
                   timeout: float) -> dict[str, Any]:
    """Peak RSS of attaching ``impl`` and training it for a few steps, over the RSS before attaching.

    Runs in a forked child, a fresh address space that starts with the base already built (no import
    or build cost): the child returns freed heap to the OS (malloc_trim), resets its peak-RSS counter,
    notes its RSS, attaches the adapter, steps, and reports VmHWM − that RSS.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        try:
            common.settle_memory(mmap_threshold=MMAP_THRESHOLD)
            reset_ok = common.reset_peak_rss()
            base_kib = common.proc_status_kib("VmRSS")
            runner = Runner(impl, base, args.lr, args.seed)
            for _ in range(MEMORY_STEPS):
                runner.step(batch)
            peak_kib = common.proc_status_kib("VmHWM")
            result = {"rss_before_mib": base_kib / 1024, "peak_extra_mib": (peak_kib - base_kib) / 1024,
                      "hwm_reset": reset_ok}
        except BaseException as exc:  # report it; never unwind into the parent's code
            result = {"memory_error": repr(exc)}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        ready = select.select([pipe], [], [], timeout)[0]
        data = pipe.read() if ready else b""
    if not data:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"memory_error": f"no result within {timeout:g} s"}


def adapter_sizes(runner: Runner) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        weights, total = runner.impl.save(runner.model, Path(tmp) / "adapter")
    return {"adapter_bytes": weights, "adapter_dir_bytes": total}


def profile(args: argparse.Namespace, base: nn.Module, impls: dict[str, Impl], batch: dict[str, torch.Tensor]) -> str:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    runner = Runner(impls[args.profile], base, args.lr, args.seed)
    for _ in range(2):
        runner.step(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            runner.step(batch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    path = Path(args.out) / f"profile_{args.profile.replace('/', '_')}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{common.command_line()}\n\n{table}\n")
    return table


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build_records(runners: dict[str, Runner], baseline_of: dict[str, str], twin_of: dict[str, str],
                  extra: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    stats = {k: common.summarize(r.times) for k, r in runners.items()}
    median = {k: s.get("median_ms") for k, s in stats.items()}
    peak = {k: extra.get(k, {}).get("peak_extra_mib") for k in runners}
    records = []
    for key, runner in runners.items():
        s = runner.impl.setting
        twin = twin_of.get(key)
        records.append({
            "benchmark": "train_step",
            "implementation": key,
            "library": runner.impl.library,
            "projection": s.projection,
            "variant": s.variant,
            "setting": s.describe(),
            "note": s.note,
            "rank": s.rank,
            "trainable": sum(p.numel() for p in runner.params),
            "status": runner.status,
            **{f"step_{k}": v for k, v in stats[key].items()},
            "baseline": baseline_of.get(key),
            "ratio_vs_peft_lora_same_rank": ratio(median[key], median.get(baseline_of.get(key))),
            "peft_same_method": twin,
            "ratio_vs_peft_same_method": ratio(median[key], median.get(twin)) if twin else None,
            "peak_ratio_vs_peft_same_method": ratio(peak[key], peak.get(twin)) if twin else None,
            **extra.get(key, {}),
        })
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    base = common.build_base(args.model, args.layers, args.seed)
    impls, baseline_of, twin_of = plan(args, base)
    batch = make_batch(base.config.vocab_size, args.batch, args.seq, args.seed)
    if args.profile:
        print(profile(args, base, {i.key: i for i in impls}, batch))
        return {}

    runners = {impl.key: Runner(impl, base, args.lr, args.seed) for impl in impls}
    print(f"timing {len(runners)} implementations: {', '.join(runners)}", file=sys.stderr, flush=True)
    run_timing(args, runners, batch)

    extra: dict[str, dict[str, Any]] = {k: {} for k in runners}
    for key, runner in runners.items():
        if not args.no_save:
            extra[key].update(adapter_sizes(runner))
    if not args.no_memory:
        timeout = max(60.0, 8 * args.step_cap)
        for key, runner in runners.items():
            if runner.status == "ok":
                print(f"memory: {key}", file=sys.stderr, flush=True)
                extra[key].update(measure_memory(args, base, runner.impl, batch, timeout))

    payload = {
        "model": {"shape": args.model, "layers": base.config.num_hidden_layers, "targets": common.TARGETS,
                  "batch": args.batch, "seq": args.seq, "base_params": sum(p.numel() for p in base.parameters())},
        "steps": args.steps,
        "warmup": args.warmup,
        "memory_method": "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before attaching, in a "
                         f"forked child per implementation that holds only the built base; {MEMORY_STEPS} training steps",
        "records": build_records(runners, baseline_of, twin_of, extra),
    }
    common.write_results(args.out, "train_step", payload, args.report)
    return payload


if __name__ == "__main__":
    main()
