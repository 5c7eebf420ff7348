"""results/benchmarks.md from the JSON files the three benchmarks write (plus benchmarks/discussion.md).

python -m benchmarks.report [results_dir] [report.md]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write

from . import common, stats
from .common import fmt

# the targets: (projection, limit) on the step-time ratio to PEFT LoRA at the same rank
STEP_TARGETS = {"lora": 1.05, "tied": 1.05, "vera": 1.05, "prolora": 1.05, "unilora": 1.05, "vblora": 1.15}
TWIN_TARGET, UNILORA_FILE_LIMIT = 0.90, 100 * 1024
PEAK_TARGETS = {"vera": 1.05, "vblora": 1.0, "unilora": 1.0}  # vera: issue 18 (≤ 1.05 × PEFT's VeRA)
GAUSSIAN_PAPER_LIMIT = 5.0  # issue 18: gaussian-paper step ≤ 5 × PEFT LoRA r = 4
DISCUSSION = Path(__file__).with_name("discussion.md")
SHAPES = {"smollm2-135m": "SmolLM2-135M", "llama2-7b": "Llama-2-7B", "tiny": "a tiny test model"}
BENCHMARKS = ("train_step", "inference", "reconstruct", "serving")


def _load(results_dir: Path, name: str) -> dict[str, Any] | None:
    path = results_dir / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _table(header: list[str], rows: list[list[str]], rule: str = "|---") -> list[str]:
    """A markdown table (``rule``: how each column's cell of the rule under the header is written)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    return ["| " + " | ".join(header) + " |", rule * len(header) + rule[0]] + [
        "| " + " | ".join(cell(c) for c in r) + " |" for r in rows
    ]


KEEP, STATUS = object(), object()  # what a column shows for a record that did not run: its cell, or the status


@dataclass(frozen=True)
class Column:
    """One table column: its header beside its cell, and what it shows for a record whose status is not ``ok``
    (``KEEP``: the same cell, for what identifies the record; ``STATUS``: why it did not run; else that text)."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    not_run: object = "—"

    def show(self, record: dict[str, Any]) -> str:
        if record.get("status", "ok") == "ok" or self.not_run is KEEP:
            return self.cell(record)
        return record["status"] if self.not_run is STATUS else str(self.not_run)


def _section(
    heading: list[str], intro: str, columns: Sequence[Column], records: list[dict[str, Any]], rule: str = "|---"
) -> list[str]:
    """A benchmark's section: heading, one paragraph saying what was measured, one table row per record."""
    rows = [[column.show(r) for column in columns] for r in records]
    return [*heading, intro, "", *_table([c.header for c in columns], rows, rule), ""]


def _spread(r: dict[str, Any], prefix: str = "") -> str:
    """Median [p25–p75] of the timing stored under ``prefix``."""
    return f"{r[prefix + 'median_ms']:.1f} [{r[prefix + 'p25_ms']:.1f}–{r[prefix + 'p75_ms']:.1f}]"


def _named(r: dict[str, Any]) -> str:
    return f"`{r['implementation']}`"


def _kib(n: int | None) -> str:
    return "—" if n is None else (f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.2f} MiB")


def _load_note(data: dict[str, Any]) -> str:
    load = data.get("machine", {}).get("load_average")
    return f" — load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min) when written" if load else ""


def _heading(title: str, data: dict[str, Any], after_command: str | None = None) -> list[str]:
    """A section's title and the command that made it (followed by the machine load, unless told otherwise)."""
    suffix = _load_note(data) if after_command is None else after_command
    return [title, "", f"`{data['command']}`{suffix}", ""]


def _check(value: float | None, limit: float) -> str:
    if value is None:
        return "n/a"
    if value <= limit:
        return "met"
    return "**missed**" + (" (by < 1 %)" if value <= limit * 1.01 else "")


def _step_cell(r: dict[str, Any]) -> str:
    return _spread(r, "step_") if r.get("status") == "ok" else r.get("status", "—")


def train_section(data: dict[str, Any]) -> list[str]:
    m = data["model"]
    records = data["records"]
    ordered = sorted(records, key=lambda r: (r["library"] != "lorazoo", r["projection"], r["rank"], r["variant"]))
    lines = [
        *_heading("## Training step: lorazoo vs PEFT", data),
        f"Model: Llama with {SHAPES.get(m['shape'], m['shape'])}'s shape ({m['layers']} layers, {m['base_params']:,} "
        f"parameters, random weights; {data.get('device', 'cpu')}, base in {data.get('dtype', 'float32')}), targets {', '.join(m['targets'])}, batch {m['batch']} × {m['seq']} tokens, causal-LM loss, "
        f"AdamW (PyTorch defaults). One step = zero_grad + forward + backward + optimiser step. Medians over "
        f"{data['steps']} rounds after {data['warmup']} warm-up rounds; every round runs each implementation once, "
        "in an order that rotates per round; all implementations share one set of frozen base weights. "
        f"[p25–p75] in brackets; step ratios are medians of the per-round ratios. Peak memory: {data['memory_method']}.",
        "",
    ]
    rows = []
    for r in ordered:
        rows.append(
            [
                f"`{r['implementation']}`",
                r["setting"],
                f"{r['trainable']:,}",
                _step_cell(r),
                fmt(r.get("ratio_vs_peft_lora_same_rank")),
                fmt(r.get("ratio_vs_peft_same_method")),
                fmt(r.get("peak_extra_mib"), ".0f"),
                fmt(r.get("peak_ratio_vs_peft_same_method")),
                _kib(r.get("adapter_bytes")),
            ]
        )
    lines += _table(
        [
            "implementation",
            "setting",
            "trainable",
            "step ms",
            "× PEFT LoRA same r",
            "× PEFT same method",
            "peak extra MiB",
            "peak × PEFT same",
            "adapter file",
        ],
        rows,
    )
    lines += [
        "",
        "Settings: "
        + "; ".join(
            sorted(
                {
                    f"`{r['projection']}{'-' + r['variant'] if r['variant'] else ''}`: {r['note']}"
                    for r in records
                    if r["library"] == "lorazoo"
                }
            )
        ),
        "",
    ]
    lines += ["### Targets", ""] + _table(["target", "value", "verdict"], _target_rows(records)) + [""]
    return lines


def _target_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    ours = {r["projection"]: r for r in records if r["library"] == "lorazoo" and not r["variant"]}
    rows = []

    def step_row(target: str, record: dict[str, Any], ratio: str, limit: float) -> list[str]:
        value, n = record.get(ratio), record.get("step_n", 0)
        if n < stats.MIN_PAIRS:  # a median of 2–4 noisy steps is not a verdict
            return [target, fmt(value, ".3f"), f"not judged (n = {n} < {stats.MIN_PAIRS})"]
        return [target, fmt(value, ".3f"), _check(value, limit)]

    for name, limit in STEP_TARGETS.items():
        if name in ours:
            target = f"{name}: step × PEFT LoRA same rank ≤ {limit}"
            rows.append(step_row(target, ours[name], "ratio_vs_peft_lora_same_rank", limit))
    for name in ("vera", "vblora", "unilora"):
        if name in ours:
            target = f"{name}: step × PEFT {name} ≤ {TWIN_TARGET}"
            rows.append(step_row(target, ours[name], "ratio_vs_peft_same_method", TWIN_TARGET))
            peak = ours[name].get("peak_ratio_vs_peft_same_method")
            limit = PEAK_TARGETS[name]
            rows.append([f"{name}: peak memory × PEFT {name} ≤ {limit}", fmt(peak, ".3f"), _check(peak, limit)])
    paper = next((r for r in records if r["implementation"] == "lorazoo/gaussian-paper"), None)
    if paper:
        value = paper.get("ratio_vs_peft_lora_same_rank") if paper.get("status") == "ok" else None
        rows.append(
            [
                f"gaussian-paper: completes, step × PEFT LoRA r=4 ≤ {GAUSSIAN_PAPER_LIMIT:g}",
                fmt(value, ".1f", missing=paper.get("status", "—")),
                _check(value, GAUSSIAN_PAPER_LIMIT),
            ]
        )
    if "unilora" in ours:
        size = ours["unilora"].get("adapter_bytes")
        rows.append(
            [
                "unilora adapter file < 100 KB (d = 23,040)",
                _kib(size),
                _check(size, UNILORA_FILE_LIMIT) if size is not None else "n/a",
            ]
        )
    return rows


def _ci(entry: dict[str, Any] | None, spec: str = ".1f") -> str:
    if not entry or entry.get("median") is None:
        return "—"
    if entry.get("n", 0) < stats.MIN_PAIRS:
        return f"{entry['median']:{spec}} [n < {stats.MIN_PAIRS}]"
    if entry.get("lo") is None:
        return f"{entry['median']:{spec}} [unbounded]"
    return f"{entry['median']:{spec}} [{entry['lo']:{spec}}, {entry['hi']:{spec}}]"


def overhead_section(data: dict[str, Any]) -> list[str]:
    """Per token setting: step − bare step with intervals, vs PEFT's overhead for the same method."""
    settings = data.get("token_settings") or []
    records = [r for r in data["records"] if "settings" in r]
    base = next((r for r in records if r["implementation"] == "base"), None)
    if not settings or base is None:
        return []
    lines = [
        *_heading("## Adapter overhead over the bare base", data, " (the same run as above)"),
        "Overhead = step − bare-base step in the same round (the bare base: same model, inputs and loss, no "
        "adapter, backward to the input embeddings, no optimiser). Medians over rounds with "
        f"{data.get('interval', 'bootstrap intervals')} in brackets. *Reference*: PEFT's same method, else PEFT "
        "LoRA at the same rank. *× reference* = our overhead ÷ the reference's overhead (unbounded when the "
        "reference's own overhead is not resolved from 0); *− reference* = our step − the reference's step per "
        "round. *Resolved*: the interval of − reference excludes 0. No interval with fewer than 5 paired rounds.",
        "",
    ]
    ordered = sorted(
        (r for r in records if r["implementation"] != "base"),
        key=lambda r: (r["library"] != "lorazoo", r["projection"], r["rank"], r["variant"]),
    )
    for st in settings:
        bare = base["settings"].get(st["name"], {})
        lines += [
            f"### {st['name']}: {st['describe']} ({st['steps']} rounds after {st['warmup']} warm-up; "
            f"bare base {fmt(bare.get('median_ms'), '.2f')} ms)",
            "",
        ]
        rows = []
        for r in ordered:
            entry = r["settings"].get(st["name"], {})
            if not entry.get("n"):
                rows.append([f"`{r['implementation']}`", r["setting"], r.get("status", "—"), "—", "—", "—", "—", "—"])
                continue
            diff = entry.get("minus_reference_ms")
            resolved = ("yes" if diff.get("resolved") else "no") if diff else "—"
            if diff and diff.get("n", 0) < stats.MIN_PAIRS:
                resolved = f"n < {stats.MIN_PAIRS}"
            rows.append(
                [
                    f"`{r['implementation']}`",
                    r["setting"],
                    f"{entry['median_ms']:.2f} (n={entry['n']})",
                    _ci(entry.get("overhead_ms"), ".2f"),
                    f"`{entry['reference']}`" if entry.get("reference") else "—",
                    _ci(entry.get("overhead_ratio"), ".2f"),
                    _ci(diff, ".2f"),
                    resolved,
                ]
            )
        lines += _table(
            [
                "implementation",
                "setting",
                "step ms",
                "overhead ms",
                "reference",
                "overhead × reference",
                "− reference ms",
                "resolved",
            ],
            rows,
        ) + [""]
    return lines


INFERENCE_COLUMNS = (
    Column("model", _named, KEEP),
    Column("setting", lambda r: r.get("setting", ""), KEEP),
    Column("forward ms", lambda r: _spread(r, "forward_"), STATUS),
    Column("× base", lambda r: fmt(r.get("forward_ratio_vs_base"))),
    Column("generate tok/s", lambda r: fmt(r.get("generate_tokens_per_s"), ".1f")),
    Column("tok/s × base", lambda r: fmt(r.get("generate_ratio_vs_base"))),
    Column("check", lambda r: r.get("check", ""), ""),
)


def inference_section(data: dict[str, Any]) -> list[str]:
    m = data["model"]
    return _section(
        _heading("## Inference: merged vs base, unmerged overhead", data),
        f"Same model shape ({m['layers']} layers), `torch.no_grad()`. Forward: batch {m['batch']} × {m['seq']} "
        f"tokens. Generation: greedy, batch 1, prompt {m['prompt']} tokens, {m['new_tokens']} new tokens "
        f"(KV cache on). Medians over {data['repeats']} interleaved rounds. Merged = `merge_and_unload()` of a "
        "perturbed (non-zero ΔW) adapter; unmerged = the adapter model as trained (θ_D computed once per call "
        "and reused while θ does not change).",
        INFERENCE_COLUMNS,
        data["records"],
    )


RECONSTRUCT_COLUMNS = (
    Column("projection", _named, KEEP),
    Column("setting", lambda r: r["setting"], KEEP),
    Column("trainable", lambda r: f"{r.get('trainable', 0):,}", KEEP),
    Column("forward ms", lambda r: fmt(r.get("forward_median_ms"), ".1f"), STATUS),
    Column("backward ms", lambda r: fmt(r.get("backward_median_ms"), ".1f")),
    Column("n", lambda r: str(r.get("forward_n", 0)), KEEP),
    Column("build s", lambda r: fmt(r.get("build_s"), ".2f"), KEEP),
)


def reconstruct_section(data: dict[str, Any]) -> list[str]:
    return _section(
        _heading("## θ_D reconstruction alone (Llama-2-7B layout)", data),
        f"Llama-2-7B all-linear, r = {data['rank']}: D = {data['D']:,} (built with `Layout.from_shapes`, no model). "
        "Forward = `projection()` → θ_D; backward = `θ_D.backward(g)` for a fixed random g. Medians over "
        f"{data['repeats']} interleaved rounds; a projection whose first forward or backward exceeds "
        f"{data['cap_s']:g} s is stopped and reported as such, and one whose timing exceeds a {data.get('budget_s', 60):g} s "
        "budget gets fewer repeats (n).",
        RECONSTRUCT_COLUMNS,
        data["records"],
    )


def machine_section(machine: dict[str, Any]) -> list[str]:
    return [
        "## Machine",
        "",
        f"{machine['cpu']}, {machine['cores']} cores visible ({machine['torch_threads']} torch threads), "
        f"{machine.get('cuda') or 'no GPU'}; Python {machine['python']}, torch {machine['torch']}, transformers "
        f"{machine['transformers']}, peft {machine['peft']}, lorazoo {machine['lorazoo']}; {machine['platform']}. "
        "The machine was shared with other jobs while these ran: single timings are noisy, which is why every "
        "benchmark interleaves implementations and reports medians with quartiles"
        + (
            f" (load average when written: {', '.join(f'{v:.1f}' for v in machine['load_average'])})."
            if machine.get("load_average")
            else "."
        ),
        "",
    ]


def _sections(sections: dict[str, dict[str, Any] | None]) -> list[str]:
    lines: list[str] = []
    if sections.get("train_step"):
        lines += train_section(sections["train_step"]) + overhead_section(sections["train_step"])
    if sections.get("inference"):
        lines += inference_section(sections["inference"])
    if sections.get("reconstruct"):
        lines += reconstruct_section(sections["reconstruct"])
    if sections.get("serving"):
        lines += serving_section(sections["serving"])
    return lines


SERVING_COLUMNS = (
    Column("serving", _named, KEEP),
    Column("forward ms", _spread, STATUS),
    Column("tokens/s", lambda r: fmt(r.get("tokens_per_s"), ".0f")),
    Column("× own sequential", lambda r: fmt(r.get("speedup_vs_sequential"))),
    Column("× PEFT mixed batch", lambda r: fmt(r.get("speedup_vs_peft_mixed"))),
    Column("check", lambda r: fmt(r.get("max_abs_diff_vs_single"), ".1e")),
)


def serving_section(data: dict[str, Any]) -> list[str]:
    """The serving section (benchmarks/serving.py also writes it alone, to serving.md)."""
    m = data["model"]
    intro = (
        f"{m['layers']} layers of {m['name']} (random weights), k = {m['adapters']} adapters on "
        f"{', '.join(m['targets'])}, {m['rows']} prompts × {m['seq']} tokens per adapter, one prefill forward under "
        "`torch.no_grad()` (last-position logits only, `logits_to_keep=1`). *Mixed batch*: all k·rows prompts in one forward with `adapter_names` (one name per row). "
        f"*Sequential*: k forwards of one adapter's rows each, `set_adapter` in between. LoRA: r = {m['rank']}, "
        f"α = {2 * m['rank']} in both libraries. *Mixed projections*: one adapter each of {', '.join(m['projections'])} "
        "(paper-style settings), which only lorazoo can batch together. Medians [quartiles] over "
        f"{data['repeats']} interleaved rounds; *check* = max |mixed − single-adapter| logits over all rows."
    )
    heading = _heading("## Serving several adapters: mixed-adapter batch vs sequential batches", data, "")
    return _section(heading, intro, SERVING_COLUMNS, data["records"], rule="| --- ")


def subdir_section(directory: Path, heading: str, intro: str) -> list[str]:
    """Every run under ``directory`` (one level of subfolders allowed), one level down in the headings."""
    runs = sorted({p.parent for p in directory.rglob("*.json") if p.stem in BENCHMARKS})
    if not runs:
        return []
    lines = [heading, "", intro, ""]
    for run in runs:
        body = _sections({name: _load(run, name) for name in BENCHMARKS})
        lines += [("#" + line) if line.startswith("#") else line for line in body]
    return lines


def gpu_section(gpu_dir: Path) -> list[str]:
    """The runs of benchmarks/gpu.sh, headed by the device name."""
    found = sorted(p for p in gpu_dir.rglob("*.json") if p.stem in BENCHMARKS)
    if not found:
        return []
    device = json.loads(found[0].read_text())["machine"].get("cuda") or "unknown device"
    return subdir_section(
        gpu_dir,
        f"## GPU: {device}",
        "Made by `bash benchmarks/gpu.sh` (CUDA-synchronised timings, base in bf16, adapters fp32).",
    )


def quick_section(quick_dir: Path) -> list[str]:
    return subdir_section(
        quick_dir,
        "## The 4-layer run (`--quick`)",
        "Same benchmark, SmolLM2-135M's shape cut to 4 layers (`results/benchmarks/quick/`): the "
        "run the issues' acceptance checks name, with peak memory.",
    )


def write_report(results_dir: Path, report_path: Path, files: dict[str, str] | None = None) -> Path:
    """The report from ``<results_dir>/<benchmark>.json`` (``files`` maps a benchmark to another file name)
    and, where ``benchmarks/gpu.sh`` has run, ``<results_dir>/gpu/**``."""
    results_dir = Path(results_dir)
    files = {**{name: name for name in BENCHMARKS}, **(files or {})}
    sections = {name: _load(results_dir, stem) for name, stem in files.items()}
    found = [d for d in sections.values() if d]
    lines = [
        "# lorazoo benchmarks",
        "",
        "Generated by `python -m benchmarks.report` from `results/benchmarks/*.json` (one record per "
        "projection × implementation); rerun the commands below to refresh.",
        "",
    ]
    if found:
        lines += machine_section(found[0]["machine"])
    lines += _sections(sections)
    if (results_dir / "quick").is_dir():
        lines += quick_section(results_dir / "quick")
    if (results_dir / "gpu").is_dir():
        lines += gpu_section(results_dir / "gpu")
    if DISCUSSION.exists():
        lines += [DISCUSSION.read_text().rstrip(), ""]
    text = "\n".join(lines)
    return atomic_write(report_path, lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    args = sys.argv[1:]
    write_report(Path(args[0]) if args else common.RESULTS_DIR, Path(args[1]) if len(args) > 1 else common.REPORT_PATH)
