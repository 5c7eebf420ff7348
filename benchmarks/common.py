"""What the benchmarks measure with: the model, the per-projection settings, PEFT twins, timing and memory
(``cli.py`` holds what they share on the command line and in their results files).

Every registered projection is benchmarked: ``settings_for`` looks each name up in ``PAPER_SETTINGS`` (a
paper-style setting scaled to the model's shapes) and falls back to the projection's defaults at rank 8.
Names in the table that are not registered (yet) are skipped.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
import signal
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import lorazoo
from lorazoo.train.loading.tiny import tiny_fields

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "results" / "benchmarks"
REPORT_PATH = REPO / "results" / "benchmarks.md"
THREADS_HELP = (
    "torch threads (default 1): on a shared machine, 2 OpenMP threads wait at every barrier for a descheduled "
    "thread (a 128×576 multiply took 7.9 ms instead of 41 µs), so timings would measure the neighbours"
)
TARGETS = ["q_proj", "v_proj"]  # the GLUE setting of LoRA, VeRA, VB-LoRA and Uni-LoRA; one target set for all

# Real models' shapes in LlamaConfig's fields (weights are random, which is fine for timing), one row each
_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "tie_word_embeddings",
)
MODELS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M config.json
    "smollm2-135m": dict(zip(_FIELDS, (49152, 576, 1536, 30, 9, 3, 2048, 1e-5, 100000.0, True), strict=True)),
    # meta-llama/Llama-2-7b-hf config.json; used with --layers 2..4 on a GPU (gpu.sh)
    "llama2-7b": dict(zip(_FIELDS, (32000, 4096, 11008, 32, 32, 32, 4096, 1e-5, 10000.0, False), strict=True)),
    # for the smoke test only: the package's tiny Llama (the one tiny-model table), with a vocabulary
    "tiny": tiny_fields("llama", vocab_size=256),
}


# ----------------------------------------------------------------------------- model
def llama_config(model: str = "smollm2-135m", layers: int | None = None):
    from transformers import LlamaConfig

    kwargs = dict(MODELS[model])
    if layers is not None:
        kwargs["num_hidden_layers"] = layers
    return LlamaConfig(**kwargs)


# where the benchmarks run (--device / --dtype of every script; CPU float32 unless asked)
DEVICE = torch.device("cpu")
DTYPE = torch.float32
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_device_args(p: Any, dtype: bool = True) -> None:
    """--device, and --dtype for the benchmarks that hold a base model (a benchmark without one offers no
    --dtype, so the option is never accepted and ignored)."""
    p.add_argument(
        "--device", default="cpu", help="cpu or cuda[:i]: CUDA timings synchronise before and after each call"
    )
    if dtype:
        p.add_argument(
            "--dtype", default="float32", choices=sorted(DTYPES), help="the base model's dtype (adapters stay fp32)"
        )


def use_device(args: Any) -> None:
    """Apply --device / --dtype for this process (one device per benchmark run)."""
    global DEVICE, DTYPE
    DEVICE, DTYPE = torch.device(args.device), DTYPES[getattr(args, "dtype", "float32")]
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: CUDA is not available here")


def placement() -> dict[str, str]:
    """Where the benchmark ran, as its results file records it (``device``, the base's ``dtype``)."""
    return {"device": str(DEVICE), "dtype": str(DTYPE).replace("torch.", "")}


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def build_base(model: str = "smollm2-135m", layers: int | None = None, seed: int = 0) -> nn.Module:
    """A Llama-like causal LM with random weights drawn from ``seed`` (identical for every caller), built
    directly on ``DEVICE`` in ``DTYPE``."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(DEVICE):
        base = LlamaForCausalLM(llama_config(model, layers)).to(DTYPE)
    return base.train()


def model_record(shape: str, base: nn.Module, batch: int, seq: int) -> dict[str, Any]:
    """The benchmarked model as its results file records it: shape name, layers, adapted targets, tokens a call."""
    return {"shape": shape, "layers": base.config.num_hidden_layers, "targets": TARGETS, "batch": batch, "seq": seq}


def shared_copy(base: nn.Module) -> nn.Module:
    """A fresh module tree whose parameters ARE the base's (frozen weights shared, not copied).

    Adapters wrap modules of the copy in place, so several implementations sit on one set of base
    weights: identical numbers, one copy in memory, same cache behaviour for all.
    """
    return copy.deepcopy(base, memo={id(p): p for p in base.parameters()})


def target_shapes(base: nn.Module, targets: Sequence[str] = TARGETS) -> list[tuple[str, int, int]]:
    """(name, in, out) of every Linear the adapters wrap."""
    return [
        (n, m.in_features, m.out_features)
        for n, m in base.named_modules()
        if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in targets
    ]


def llama2_7b_shapes() -> list[tuple[str, int, int]]:
    """Llama-2-7B's linear layers (all-linear targets): 32 × (q, k, v, o 4096², gate/up 4096→11008, down)."""
    hidden, inter = 4096, 11008
    kinds = [
        ("self_attn.q_proj", hidden, hidden),
        ("self_attn.k_proj", hidden, hidden),
        ("self_attn.v_proj", hidden, hidden),
        ("self_attn.o_proj", hidden, hidden),
        ("mlp.gate_proj", hidden, inter),
        ("mlp.up_proj", hidden, inter),
        ("mlp.down_proj", inter, hidden),
    ]
    return [(f"model.layers.{i}.{kind}", h, o) for i in range(32) for kind, h, o in kinds]


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Setting:
    """One benchmarked configuration of a projection (``variant`` tells several of one projection apart)."""

    projection: str
    rank: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    alpha: float | None = None
    variant: str = ""
    note: str = ""

    @property
    def key(self) -> str:
        return self.projection + (f"-{self.variant}" if self.variant else "")

    def adapter_config(self, targets: Sequence[str] = TARGETS, seed: int = 0) -> lorazoo.AdapterConfig:
        return lorazoo.AdapterConfig(
            projection=self.projection,
            rank=self.rank,
            target_modules=list(targets),
            alpha=self.alpha,
            seed=seed,
            projection_kwargs=dict(self.kwargs),
        )

    def describe(self) -> str:
        parts = [f"r={self.rank}"] + ([f"α={self.alpha:g}"] if self.alpha is not None else [])
        return ", ".join(parts + [f"{k}={v}" for k, v in self.kwargs.items()])


class Shapes:
    """What a setting may scale with: the adapted (in, out) sizes and D at a given rank."""

    def __init__(self, shapes: Sequence[tuple[str, int, int]]):
        self.shapes = list(shapes)
        self.sizes = sorted({s for _, h, o in self.shapes for s in (h, o)})

    def D(self, rank: int) -> int:
        return rank * sum(h + o for _, h, o in self.shapes)

    def vector_length(self, preferred: int = 256) -> int:
        """VB-LoRA's sub-vector length: the largest power of two ≤ ``preferred`` dividing every size."""
        length = preferred
        while length > 1 and any(s % length for s in self.sizes):
            length //= 2
        return length

    def min_width(self) -> int:
        """The narrowest side of any adapted weight: a truncated SVD's rank limit (LoRA-XS, TinyLoRA)."""
        return min(min(h, o) for _, h, o in self.shapes)

    def global_d(self, rank: int, preferred: int = 23040) -> int:
        """The paper's d = 23,040 when it is below D / 2, else D / 2 (tiny models)."""
        return max(1, min(preferred, self.D(rank) // 2))


def _gaussian(s: Shapes) -> list[Setting]:
    return [
        Setting(
            "gaussian",
            4,
            {"d": s.global_d(4)},
            variant="paper",
            note="Uni-LoRA's ablation at d=23,040: P (D×d) regenerated in chunks every forward and backward",
        ),
        Setting(
            "gaussian",
            4,
            {"d": min(64, s.global_d(4))},
            variant="d64",
            note="scaled down so that the dense P fits the cache (D·d ≤ 2^24 on SmolLM2 q,v)",
        ),
    ]


# Paper-style settings scaled to the model. One callable per projection: Shapes -> [Setting, ...].
PAPER_SETTINGS: dict[str, Callable[[Shapes], list[Setting]]] = {
    "lora": lambda s: [Setting("lora", 8, alpha=16, note="LoRA r=8, α=16 (Hu et al. 2021, q/v)")],
    "tied": lambda s: [Setting("tied", 8, alpha=16, note="Tied-LoRA r=8: shared A, B and per-layer u, v all trained")],
    "prolora": lambda s: [
        Setting(
            "prolora",
            8,
            {"unshared_rank": 1, "m": 2, "n": 2},
            alpha=16,
            note="PRoLoRA r=8, u=1, m=n=2, α=16 (authors' scripts use α=16)",
        )
    ],
    "vera": lambda s: [Setting("vera", 256, note="VeRA r=256, λ_d=0.1, shared A/B regenerated from the seed")],
    "vblora": lambda s: [
        Setting(
            "vblora",
            4,
            {"num_vectors": 90, "vector_length": s.vector_length(256), "topk": 2},
            note="VB-LoRA GLUE setting (90 vectors, top-2, r=4); length 256 cut to divide every size",
        )
    ],
    "unilora": lambda s: [
        Setting("unilora", 4, {"d": s.global_d(4)}, note="Uni-LoRA GLUE setting: global θ_d, d=23,040, r=4")
    ],
    "gaussian": _gaussian,
    "fastfood": lambda s: [
        Setting("fastfood", 4, {"d": s.global_d(4)}, note="Uni-LoRA's Fastfood ablation, d=23,040, r=4")
    ],
    "tinylora": lambda s: [
        Setting("tinylora", 2, {"u": 64}, note="TinyLoRA r=2, u=64, one v per module (PEFT's defaults)")
    ],
    "randlora": lambda s: [
        Setting("randlora", 64, alpha=128, note="RandLoRA GLUE setting r=64, α=2r (authors' run_glue.py)")
    ],
    "nola": lambda s: [
        Setting(
            "nola",
            16,
            {"num_basis": 512},
            alpha=4,
            note="NOLA LLaMA-2 setting r=16, α=4, k=512 bases per factor (streamed beyond 2^24 basis values)",
        )
    ],
    "loraxs": lambda s: [
        Setting(
            "loraxs",
            min(64, s.min_width()),
            alpha=min(64, s.min_width()),
            note="LoRA-XS r=α=64 (authors' math setting)",
        )
    ],
}


def settings_for(shapes: Shapes, only: Sequence[str] | None = None) -> list[Setting]:
    """One or more settings for every registered projection (table entry, else defaults at rank 8)."""
    out = []
    for name in lorazoo.projection_names():
        if only and name not in only:
            continue
        rule = PAPER_SETTINGS.get(name)
        out.extend(rule(shapes) if rule else [Setting(name, 8, note="not in the settings table: projection defaults")])
    return out


# ----------------------------------------------------------------------------- PEFT twins
PEFT_METHODS = ("lora", "vera", "vblora", "unilora", "tinylora", "randlora")


def peft_config(setting: Setting, targets: Sequence[str] = TARGETS, seed: int = 0):
    """PEFT 0.21's config for the same method and setting, or None where PEFT lacks the method."""
    import peft

    kw, r, targets = setting.kwargs, setting.rank, list(targets)
    if setting.projection == "lora":
        return peft.LoraConfig(r=r, lora_alpha=setting.alpha or r, target_modules=targets, lora_dropout=0.0)
    if setting.projection == "vera":
        return peft.VeraConfig(
            r=r, target_modules=targets, vera_dropout=0.0, projection_prng_key=seed, d_initial=kw.get("d_initial", 0.1)
        )
    if setting.projection == "vblora":
        return peft.VBLoRAConfig(
            r=r,
            target_modules=targets,
            vblora_dropout=0.0,
            num_vectors=kw["num_vectors"],
            vector_length=kw["vector_length"],
            topk=kw.get("topk", 2),
        )
    if setting.projection == "unilora" and kw.get("share", "global") == "global":
        return peft.UniLoraConfig(
            r=r, target_modules=targets, unilora_dropout=0.0, theta_d_length=kw["d"], proj_seed=seed
        )
    if setting.projection == "randlora":
        return peft.RandLoraConfig(
            r=r,
            randlora_alpha=setting.alpha or r,
            target_modules=targets,
            randlora_dropout=0.0,
            projection_prng_key=seed,
        )
    if setting.projection == "tinylora":
        return peft.TinyLoraConfig(
            r=r, u=kw["u"], weight_tying=kw.get("weight_tying", 0.0), target_modules=targets, tinylora_dropout=0.0
        )
    return None


def peft_lora_baseline(rank: int) -> Setting:
    """PEFT LoRA at ``rank`` with α = 2r (the lorazoo lora setting at r = 8 is exactly this)."""
    return Setting(
        "lora", rank, alpha=2 * rank, variant="" if rank == 8 else f"r{rank}", note=f"PEFT LoRA baseline at r={rank}"
    )


@dataclass(frozen=True)
class Impl:
    """One implementation of one setting: ``lorazoo`` or ``peft``."""

    library: str
    setting: Setting

    @property
    def key(self) -> str:
        return f"{self.library}/{self.setting.key}"

    def build(self, base: nn.Module, seed: int = 0) -> nn.Module:
        """Attach this implementation's adapter to ``base`` (in place); PEFT draws its init from torch's RNG."""
        torch.manual_seed(seed)
        if self.library == "lorazoo":
            return lorazoo.attach(base, self.setting.adapter_config(seed=seed))
        import peft

        return peft.get_peft_model(base, peft_config(self.setting, seed=seed))

    def save(self, model: nn.Module, path: Path) -> tuple[int, int]:
        """(weights file bytes, whole adapter directory bytes) as each library saves by default."""
        if self.library == "lorazoo":
            model.save_adapter(path)
            weights = path / "adapter.safetensors"
        else:
            model.save_pretrained(str(path))
            weights = path / "adapter_model.safetensors"
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return weights.stat().st_size, total


def implementations(settings: Sequence[Setting]) -> tuple[list[Impl], dict[str, str], dict[str, str]]:
    """lorazoo impls, their PEFT twins and the PEFT LoRA baselines (deduplicated, first-seen order).

    Returns (impls, PEFT LoRA baseline key of every impl, PEFT twin key of each lorazoo impl). The twin of
    lorazoo's lora is the baseline itself (both r = 8, α = 16).
    """
    impls: dict[str, Impl] = {}
    baseline_of: dict[str, str] = {}
    twin_of: dict[str, str] = {}

    def add(impl: Impl) -> str:
        impls.setdefault(impl.key, impl)
        return impl.key

    for setting in settings:
        ours = add(Impl("lorazoo", setting))
        baseline = add(Impl("peft", peft_lora_baseline(setting.rank)))
        baseline_of[ours] = baseline_of[baseline] = baseline
        if setting.projection == "lora":
            twin_of[ours] = baseline
        elif peft_config(setting) is not None:
            twin_of[ours] = add(Impl("peft", setting))
            baseline_of[twin_of[ours]] = baseline
    return list(impls.values()), baseline_of, twin_of


def trainable_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- timing
class TimeLimitExceeded(BaseException):
    """A BaseException, like KeyboardInterrupt: code under the timer that falls back on ``except Exception``
    (lorazoo's compiled generator turns any compile error into eager generation) must not swallow it."""


def on_cpu_clock() -> bool:
    """Caps and budgets count this process's CPU seconds on a CPU run (a shared machine's load stretches
    wall time, not the work: at load 14 on 2 cores a step took 7× its CPU time), wall seconds on a GPU."""
    return DEVICE.type == "cpu"


def clock() -> float:
    return time.process_time() if on_cpu_clock() else time.perf_counter()


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise TimeLimitExceeded after ``seconds`` of ``clock()`` (checked whenever Python regains control)."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def handler(signum, frame):
        raise TimeLimitExceeded(f"exceeded {seconds:g} s")

    timer, signum = (signal.ITIMER_PROF, signal.SIGPROF) if on_cpu_clock() else (signal.ITIMER_REAL, signal.SIGALRM)
    previous = signal.signal(signum, handler)
    signal.setitimer(timer, seconds)
    try:
        yield
    finally:
        signal.setitimer(timer, 0)
        signal.signal(signum, previous)


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of ``fn()``; on CUDA the queue is drained before and after, so the kernels are counted."""
    synchronize()
    start = time.perf_counter()
    fn()
    synchronize()
    return time.perf_counter() - start


def summarize(times_s: Sequence[float]) -> dict[str, float]:
    """Median and quartiles in milliseconds."""
    if not times_s:
        return {}
    ms = sorted(t * 1e3 for t in times_s)
    q = statistics.quantiles(ms, n=4) if len(ms) > 1 else [ms[0]] * 3
    return {"median_ms": statistics.median(ms), "p25_ms": q[0], "p75_ms": q[2], "n": len(ms)}


def round_robin(keys: Sequence[str], round_index: int) -> list[str]:
    """The keys rotated by the round number, so no implementation always runs first (or after the same one)."""
    shift = round_index % max(len(keys), 1)
    return list(keys[shift:]) + list(keys[:shift])


# ----------------------------------------------------------------------------- memory (CPU)
def proc_status_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise KeyError(field_name)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def settle_memory(mmap_threshold: int | None = None) -> None:
    """Give freed heap back to the OS so RSS reflects live memory (glibc; a no-op elsewhere).

    ``mmap_threshold`` (bytes) pins glibc's mmap/trim thresholds so every buffer at least that large is
    mapped on allocation and unmapped on free: RSS then follows the live tensors, not the allocator's history.
    """
    gc.collect()
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if mmap_threshold:
            libc.mallopt(-3, mmap_threshold)  # M_MMAP_THRESHOLD (also stops the dynamic adjustment)
            libc.mallopt(-1, mmap_threshold)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)


# ----------------------------------------------------------------------------- report cells
def fmt(value: Any, spec: str = ".2f", missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)
