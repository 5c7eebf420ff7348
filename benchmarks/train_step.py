"""Full training steps (forward + backward + AdamW) of every lorazoo projection next to PEFT's implementations
and the bare frozen base, in three token settings.

All implementations share ONE set of frozen base weights (``common.shared_copy``): same numbers, one copy in
memory. They run round-robin, one step each per round (the order rotates every round), so machine noise
hits all of them alike; we report medians over ``--steps`` rounds after ``--warmup`` rounds. Step ratios
(× PEFT LoRA at the same rank, × PEFT's same method) are medians of the per-round ratios, so a round the
machine slowed down counts against both sides.

The bare base (``base``) is the same model without an adapter: forward, the same loss, and a backward whose
gradient is taken with respect to the input embeddings (transformers' ``enable_input_require_grads``), i.e.
the activation-gradient work every adapter's backward needs anyway; it has no optimiser. *Adapter overhead* =
step − bare step, per round; the report gives its median with a bootstrap interval over rounds, lorazoo's
overhead ÷ PEFT's for the same method, and lorazoo − PEFT per round (``benchmarks/stats.py``). Settings:
``main`` (--batch × --seq, training), ``small`` (1 × 16 tokens, training: adapters are a visible share) and
``decode`` (one token, ``torch.no_grad`` forward: what a generation step costs without KV cache effects).

An implementation whose first call exceeds ``--step-cap`` seconds is dropped; one whose time in a setting
exceeds ``--budget`` seconds skips the remaining warm-up and stops after 2 timed rounds (its n says so).

Peak memory (CPU) is measured in a forked child per implementation (a fresh address space, no import
cost): pin glibc's mmap threshold at 256 KiB (large buffers are unmapped when freed), attach and step a
throw-away copy once (so that shared-library pages the child faults in on first use are not counted), free
it and return freed heap to the OS, reset the peak-RSS counter (/proc/self/clear_refs), note the RSS,
attach the adapter and run 2 training steps; the number is peak RSS minus that RSS, i.e. adapter +
optimiser state + gradients + activations and autograd buffers of a step. The base's activations are the
same for every implementation, so the differences are the adapters'.

    python -m benchmarks.train_step            # SmolLM2-135M shape, 30 layers (the results in benchmarks.md)
    python -m benchmarks.train_step --quick    # 4 layers; ~5 min, +~10 min for gaussian-paper (P regenerated)
    python -m benchmarks.train_step --only vera,tied   # a partial run: its own json, never the full table
    python -m benchmarks.train_step --profile lorazoo/vera   # torch.profiler table of one implementation's step
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import select
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import cli, common, stats
from .common import Impl

MEMORY_STEPS = 2
MIN_TIMED = 2  # an implementation over its budget still gets this many timed rounds
BASE = "base"
MMAP_THRESHOLD = 256 * 1024  # buffers ≥ 256 KiB are mapped/unmapped directly while measuring memory


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        __doc__,
        quick="4 layers, 10 steps, 2 warm-up rounds, 300 s first-call cap (gaussian-paper: ~1 min a step), 20 s budget",
    )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed rounds (each implementation steps once per round)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--step-cap",
        type=float,
        default=None,
        help="drop an implementation whose first call exceeds this (CPU s on a CPU run; default 30, --quick 300)",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=90.0,
        help="seconds (CPU seconds on a CPU run) per implementation and setting; over it: no more "
        "warm-up, 2 timed rounds",
    )
    p.add_argument("--settings", default="main,small,decode", help="token settings to time (main,small,decode)")
    p.add_argument("--small", default="1x16", help="batch × seq of the small-token setting")
    p.add_argument("--small-steps", type=int, default=None, help="timed rounds of 'small' (default 2 × --steps)")
    p.add_argument("--decode-steps", type=int, default=None, help="timed rounds of 'decode' (default 5 × --steps)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-implementation peak-RSS measurement")
    p.add_argument("--no-save", action="store_true", help="skip the adapter file sizes")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--profile", default="", help="profile this implementation key (e.g. lorazoo/vera) and exit")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = cli.parse(p, argv, full_run=("model",))
    if args.quick:
        args.warmup = min(args.warmup, 2)
        args.steps = min(args.steps, 10)
        args.step_cap = 300.0 if args.step_cap is None else args.step_cap
        args.budget = min(args.budget, 20.0)
    args.step_cap = 30.0 if args.step_cap is None else args.step_cap
    args.small_steps = args.small_steps or 2 * args.steps
    args.decode_steps = args.decode_steps or 5 * args.steps
    args.settings = [name for name in args.settings.split(",") if name]
    unknown = sorted(set(args.settings) - {"main", "small", "decode"})
    if unknown:
        p.error(f"--settings: unknown {unknown}; valid: main, small, decode")
    return args


class TokenSetting:
    """One timed setting: ``train`` steps on batch × seq tokens, or a ``decode`` no-grad forward."""

    def __init__(self, name: str, batch: int, seq: int, mode: str, steps: int, warmup: int):
        self.name, self.batch, self.seq, self.mode, self.steps, self.warmup = name, batch, seq, mode, steps, warmup

    def describe(self) -> str:
        what = "training step" if self.mode == "train" else "no-grad forward"
        return f"{self.batch} × {self.seq} tokens, {what}"


def token_settings(args: argparse.Namespace) -> list[TokenSetting]:
    small_batch, small_seq = (int(v) for v in args.small.lower().split("x"))
    table = {
        "main": TokenSetting("main", args.batch, args.seq, "train", args.steps, args.warmup),
        "small": TokenSetting("small", small_batch, small_seq, "train", args.small_steps, args.warmup),
        "decode": TokenSetting("decode", 1, 1, "decode", args.decode_steps, args.warmup),
    }
    return [table[name] for name in args.settings]


def plan(args: argparse.Namespace, base: nn.Module) -> tuple[list[Impl], dict[str, str], dict[str, str]]:
    shapes = common.Shapes(common.target_shapes(base))
    return common.implementations(common.settings_for(shapes, cli.projections(args)))


def make_batch(vocab: int, batch: int, seq: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen)
    return {"input_ids": ids.to(common.DEVICE), "labels": ids.clone().to(common.DEVICE)}


class Runner:
    """One implementation (or, with ``impl=None``, the bare base): its model on the shared base weights,
    AdamW, a training step and a decode call."""

    def __init__(self, impl: Impl | None, base: nn.Module, lr: float, seed: int):
        self.impl = impl
        if impl is None:
            self.model = common.shared_copy(base).requires_grad_(False)  # frozen, as under every adapter
            self.model.enable_input_require_grads()  # backward through the whole base, no weight gradients
        else:
            self.model = impl.build(common.shared_copy(base), seed)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr) if self.params else None
        self.times: dict[str, list[float | None]] = {}  # per setting, one entry per timed round
        self.spent: dict[str, float] = {}  # seconds used per setting (warm-up included)
        self.status = "ok"

    @property
    def key(self) -> str:
        return self.impl.key if self.impl else BASE

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        if self.optimizer:
            self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(**batch).loss
        loss.backward()
        if self.optimizer:
            self.optimizer.step()

    def decode(self, batch: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.model(input_ids=batch["input_ids"])

    def clear(self) -> None:
        if self.optimizer:
            self.optimizer.zero_grad(set_to_none=True)


def run_timing(args: argparse.Namespace, runners: dict[str, Runner], setting: TokenSetting, vocab: int) -> None:
    """Round-robin calls of every implementation in ``setting``; ``times[setting]`` gets one entry per timed
    round (None where the implementation sat the round out), so rounds stay paired across implementations."""
    batch = make_batch(vocab, setting.batch, setting.seq, args.seed)
    keys = list(runners)
    for runner in runners.values():
        runner.times[setting.name], runner.spent[setting.name] = [], 0.0
    for round_index in range(setting.warmup + setting.steps):
        timed_round = round_index >= setting.warmup
        for key in common.round_robin(keys, round_index):
            runner = runners[key]
            call = runner.step if setting.mode == "train" else runner.decode
            if runner.status != "ok" or not _takes_part(runner, setting, round_index, args.budget):
                if timed_round:
                    runner.times[setting.name].append(None)
                continue
            started = common.clock()
            try:
                cap = args.step_cap if round_index == 0 else None
                with common.time_limit(cap):
                    elapsed = common.timed(functools.partial(call, batch))
                # the timer's exception can be lost (raised where Python ignores it, e.g. in a finaliser):
                # a first call over the cap is dropped by its measured time all the same
                if cap and common.clock() - started > cap:
                    raise common.TimeLimitExceeded(f"exceeded {cap:g} s")
            except common.TimeLimitExceeded:
                runner.status = f"first call > {args.step_cap:g} s ({setting.name}); dropped"
                runner.clear()
                if timed_round:
                    runner.times[setting.name].append(None)
                continue
            runner.spent[setting.name] += common.clock() - started  # CPU seconds on a CPU run
            if timed_round:
                runner.times[setting.name].append(elapsed)
        gc.collect()
        print(
            f"{setting.name}: round {round_index + 1}/{setting.warmup + setting.steps} done",
            file=sys.stderr,
            flush=True,
        )


def _takes_part(runner: Runner, setting: TokenSetting, round_index: int, budget: float) -> bool:
    """Within budget: every round. Over it: no more warm-up (it is warm), then MIN_TIMED timed rounds."""
    if round_index == 0 or runner.spent[setting.name] <= budget:
        return True
    if round_index < setting.warmup:
        return False
    return sum(t is not None for t in runner.times[setting.name]) < MIN_TIMED


def measure_memory(
    args: argparse.Namespace, base: nn.Module, impl: Impl | None, batch: dict[str, torch.Tensor], timeout: float
) -> dict[str, Any]:
    """Peak RSS of attaching ``impl`` and training it for a few steps, over the RSS before attaching.

    Runs in a forked child, a fresh address space that starts with the base already built (no import
    or build cost): the child steps a throw-away copy once (``_fault_in_code``), returns freed heap to the
    OS (malloc_trim), resets its peak-RSS counter, notes its RSS, attaches the adapter, steps, and reports
    VmHWM − that RSS.
    """
    if common.DEVICE.type == "cuda":
        return _cuda_memory(args, base, impl, batch)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        try:
            common.settle_memory(mmap_threshold=MMAP_THRESHOLD)  # before any allocation: big buffers get unmapped
            _fault_in_code(impl, base, batch, args)
            common.settle_memory(mmap_threshold=MMAP_THRESHOLD)  # the throw-away copy's heap back to the OS
            reset_ok = common.reset_peak_rss()
            base_kib = common.proc_status_kib("VmRSS")
            runner = Runner(impl, base, args.lr, args.seed)
            for _ in range(MEMORY_STEPS):
                runner.step(batch)
            peak_kib = common.proc_status_kib("VmHWM")
            result = {
                "rss_before_mib": base_kib / 1024,
                "peak_extra_mib": (peak_kib - base_kib) / 1024,
                "hwm_reset": reset_ok,
            }
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


def _fault_in_code(
    impl: Impl | None, base: nn.Module, batch: dict[str, torch.Tensor], args: argparse.Namespace
) -> None:
    """One throw-away attach and step before the counter is reset (its memory is freed on return).

    A forked child maps the parent's shared libraries but faults their pages in again on first use, and VmHWM
    counts those file pages: the first call of any torch kernel in the child (lorazoo's integer generator
    costs ~16 MiB of libtorch pages, PEFT's uniform init others) would be counted as adapter memory.
    """
    warm = Runner(impl, base, args.lr, args.seed)
    warm.step(batch)
    del warm
    gc.collect()


def _cuda_memory(
    args: argparse.Namespace, base: nn.Module, impl: Impl | None, batch: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """On CUDA (no fork): peak allocated bytes of attaching + stepping, over the allocation before."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(common.DEVICE)
    before = torch.cuda.memory_allocated(common.DEVICE)
    runner = Runner(impl, base, args.lr, args.seed)
    for _ in range(MEMORY_STEPS):
        runner.step(batch)
    peak = torch.cuda.max_memory_allocated(common.DEVICE)
    del runner
    gc.collect()
    return {"rss_before_mib": before / 2**20, "peak_extra_mib": (peak - before) / 2**20, "hwm_reset": True}


def adapter_sizes(runner: Runner) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        weights, total = runner.impl.save(runner.model, Path(tmp) / "adapter")
    return {"adapter_bytes": weights, "adapter_dir_bytes": total}


def profile(args: argparse.Namespace, base: nn.Module, impls: dict[str, Impl], batch: dict[str, torch.Tensor]) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runner = Runner(impls[args.profile], base, args.lr, args.seed)
    for _ in range(2):
        runner.step(batch)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            runner.step(batch)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    path = Path(args.out) / f"profile_{args.profile.replace('/', '_')}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{cli.command_line()}\n\n{table}\n")
    return table


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def reference_of(key: str, baseline_of: dict[str, str], twin_of: dict[str, str]) -> str | None:
    """What an implementation's overhead is compared with: PEFT's same method, else PEFT LoRA at the same rank."""
    reference = twin_of.get(key) or baseline_of.get(key)
    return None if reference == key else reference


def setting_stats(
    runners: dict[str, Runner], key: str, reference: str | None, setting: TokenSetting, seed: int
) -> dict[str, Any]:
    """Median/quartiles of one implementation's calls, its overhead over the bare base, and vs its reference."""
    ms = {k: [t * 1e3 if t is not None else None for t in r.times.get(setting.name, [])] for k, r in runners.items()}
    ours = ms[key]
    out: dict[str, Any] = {**common.summarize([t / 1e3 for t in ours if t is not None]), "times_ms": ours}
    if key != BASE and BASE in ms:
        out["overhead_ms"] = stats.paired_difference(ours, ms[BASE], seed)
    if reference in ms:
        out["reference"] = reference
        out["minus_reference_ms"] = stats.paired_difference(ours, ms[reference], seed)
        if BASE in ms:
            out["overhead_ratio"] = stats.overhead_ratio(ours, ms[reference], ms[BASE], seed)
    return out


def build_records(
    runners: dict[str, Runner],
    baseline_of: dict[str, str],
    twin_of: dict[str, str],
    extra: dict[str, dict[str, Any]],
    settings: list[TokenSetting],
    seed: int = 0,
) -> list[dict[str, Any]]:
    main_name = settings[0].name if settings else None
    stats_main = {
        k: common.summarize([t for t in r.times.get(main_name, []) if t is not None]) for k, r in runners.items()
    }
    main_times = {k: r.times.get(main_name, []) for k, r in runners.items()}

    def step_ratio(key: str, reference: str | None) -> float | None:
        """Median over rounds of this step ÷ the reference's step in the same round (stats.paired_ratio)."""
        return stats.paired_ratio(main_times[key], main_times[reference]) if reference in main_times else None

    peak = {k: extra.get(k, {}).get("peak_extra_mib") for k in runners}
    records = []
    for key, runner in runners.items():
        twin = twin_of.get(key)
        reference = reference_of(key, baseline_of, twin_of)
        per_setting = {st.name: setting_stats(runners, key, reference, st, seed) for st in settings}
        if runner.impl is None:
            identity = {
                "library": "base",
                "projection": "",
                "variant": "",
                "setting": "no adapter",
                "note": "bare frozen base: forward + backward to the input embeddings, no optimiser",
                "rank": 0,
            }
        else:
            s = runner.impl.setting
            identity = {
                "library": runner.impl.library,
                "projection": s.projection,
                "variant": s.variant,
                "setting": s.describe(),
                "note": s.note,
                "rank": s.rank,
            }
        records.append(
            {
                "benchmark": "train_step",
                "implementation": key,
                **identity,
                "trainable": sum(p.numel() for p in runner.params),
                "status": runner.status,
                **{f"step_{k}": v for k, v in stats_main[key].items()},
                "baseline": baseline_of.get(key),
                "ratio_vs_peft_lora_same_rank": step_ratio(key, baseline_of.get(key)),
                "peft_same_method": twin,
                "ratio_vs_peft_same_method": step_ratio(key, twin) if twin else None,
                "peak_ratio_vs_peft_same_method": ratio(peak[key], peak.get(twin)) if twin else None,
                "settings": per_setting,
                **extra.get(key, {}),
            }
        )
    return records


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    base = common.build_base(args.model, args.layers, args.seed)
    impls, baseline_of, twin_of = plan(args, base)
    batch = make_batch(base.config.vocab_size, args.batch, args.seq, args.seed)
    if args.profile:
        print(profile(args, base, {i.key: i for i in impls}, batch))
        return {}

    runners = {BASE: Runner(None, base, args.lr, args.seed)}
    runners.update({impl.key: Runner(impl, base, args.lr, args.seed) for impl in impls})
    settings = token_settings(args)
    print(f"timing {len(runners)} implementations: {', '.join(runners)}", file=sys.stderr, flush=True)
    for setting in settings:
        run_timing(args, runners, setting, base.config.vocab_size)

    extra: dict[str, dict[str, Any]] = {k: {} for k in runners}
    for key, runner in runners.items():
        if not args.no_save and runner.impl is not None:
            extra[key].update(adapter_sizes(runner))
    if not args.no_memory:
        timeout = max(60.0, 8 * args.step_cap)
        for key, runner in runners.items():
            if runner.status == "ok":
                print(f"memory: {key}", file=sys.stderr, flush=True)
                extra[key].update(measure_memory(args, base, runner.impl, batch, timeout))

    conditions = {
        "model": {
            **common.model_record(args.model, base, args.batch, args.seq),
            "base_params": sum(p.numel() for p in base.parameters()),
        },
        "steps": args.steps,
        "warmup": args.warmup,
        "budget_s": args.budget,
        "step_cap_s": args.step_cap,
        "only": args.only,
        "token_settings": [
            {
                "name": st.name,
                "batch": st.batch,
                "seq": st.seq,
                "mode": st.mode,
                "steps": st.steps,
                "warmup": st.warmup,
                "describe": st.describe(),
            }
            for st in settings
        ],
        "interval": f"{int(stats.LEVEL * 100)} % percentile bootstrap over rounds ({stats.BOOTSTRAP} resamples)",
        **common.placement(),
        "memory_method": (
            f"peak torch.cuda.max_memory_allocated minus the allocation before attaching, {MEMORY_STEPS} training steps"
            if common.DEVICE.type == "cuda"
            else "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before attaching, in a "
            "forked child per implementation that holds only the built base, after one throw-away attach and step "
            f"(shared-library pages faulted in) was freed; {MEMORY_STEPS} training steps"
        ),
    }
    records = build_records(runners, baseline_of, twin_of, extra, settings, args.seed)
    return cli.publish(args, "train_step", conditions, records)


if __name__ == "__main__":
    main()
