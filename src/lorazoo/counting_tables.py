"""The paper-count tables: the LoRA-variant papers' parameter columns reproduced offline (meta device, no weights).

    lorazoo-count                      # the whole table -> results/param_counts.md
    lorazoo-count --model roberta-base --projection vera --rank 1024 --targets query,value
    (or: python scripts/count_params.py ..., python -m lorazoo.counting_tables ...)

Each table row carries the exact command that reproduces it. Rows whose projection is not registered
are listed as skipped; rows whose setting is invalid for the model say why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from lorazoo import AdapterConfig, LoraZooError, count_parameters, projection_names
from lorazoo.counting import load_model_spec
from lorazoo.files import atomic_write
from lorazoo.projections import get_projection_class
from lorazoo.train.config.model_fit import yaml_defaults


def checkout_root() -> Path:
    """The repo checkout around the package (src layout), whose results/ the table belongs in; else the cwd."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "configs").is_dir() else Path.cwd()


REPO = checkout_root()
DEFAULT_OUT = REPO / "results" / "param_counts.md"

VBLORA = "VB-LoRA (Li et al. 2024, arXiv:2405.15179) Table 1"
LORA = "LoRA (Hu et al. 2021, arXiv:2106.09685) Table 2"
VERA = "VeRA (Kopiczko et al. 2024, arXiv:2310.11454) Table 2"
UNILORA = "Uni-LoRA (Li et al. 2025, arXiv:2506.00799)"
PROLORA = "PRoLoRA (Wang et al. 2024, arXiv:2402.16902)"
HEAD_NOTE = "q,v adapters only; the classifier head is trained too but not counted (as in the papers)"


@dataclass
class Row:
    """One table row: a setting to count, where it comes from, and what the source printed."""

    section: str
    model: str
    projection: str
    rank: int
    targets: str | list[str] | None = None  # None: the model yaml's target_modules
    kwargs: dict[str, Any] = field(default_factory=dict)
    paper: str = "—"
    note: str = ""

    def resolved_targets(self) -> str | list[str]:
        return self.targets if self.targets is not None else load_model_spec(self.model)["target_modules"]

    def command(self) -> str:
        """The command line that reproduces this row alone (kept in the table next to the numbers)."""
        targets = self.resolved_targets()
        parts = [
            "python scripts/count_params.py",
            f"--model {self.model}",
            f"--projection {self.projection}",
            f"--rank {self.rank}",
            f"--targets {targets if isinstance(targets, str) else ','.join(targets)}",
        ]
        if self.kwargs:
            parts.append("--kwargs " + format_kwargs(self.kwargs))
        return " ".join(parts)


def format_kwargs(kwargs: dict[str, Any]) -> str:
    """``k=v,k=v`` for plain scalars, else a quoted JSON object (both parse back with parse_kwargs)."""
    if all(isinstance(v, (int, float, bool)) or (isinstance(v, str) and v.isidentifier()) for v in kwargs.values()):
        return ",".join(f"{k}={v}" for k, v in kwargs.items())
    return "'" + json.dumps(kwargs, separators=(",", ":")) + "'"


def paper_rows() -> list[Row]:
    """The papers' settings, one row each; the section names the source (paper, table) of every value."""
    qv, all_linear = ["query", "value"], "all-linear"
    vb = {"num_vectors": 90, "vector_length": 256, "topk": 2}
    vblora = partial(Row, VBLORA, "roberta-base", targets=qv)
    glue = partial(
        Row, f"{UNILORA} GLUE", projection="unilora", rank=4, targets=qv, kwargs={"d": 23040}, paper="0.023M"
    )
    ablation = partial(Row, f"{UNILORA} ablation", "roberta-base", rank=4, targets=qv, kwargs={"d": 23040})
    math = partial(Row, f"{UNILORA} math", targets=all_linear)
    prolora = partial(Row, PROLORA, "llama-2-7b", targets=all_linear)
    all_kinds = "lm_head excluded (D = r · Σ(in + out) from the model config)"
    rows = [
        vblora("lora", 8, paper="0.295M", note=HEAD_NOTE),
        vblora("vera", 1024, paper="0.043M", note=f"{HEAD_NOTE}; d = Σ_l (r + out_l)"),
        vblora(
            "tied",
            8,
            paper="0.043M",
            note="the paper does not state its Tied-LoRA setting; ours: r = 8, one tied group per module kind, lorazoo's tied defaults",
        ),
        vblora(
            "vblora",
            4,
            kwargs=vb,
            paper="0.023M (stored)",
            note="paper counts stored numel: bank 90×256 + top-k indices (¼ float each) and k−1 weights; trainable adds the logits",
        ),
        Row(LORA, "roberta-large", "lora", 8, qv, paper="0.8M", note=HEAD_NOTE),
        Row(VERA, "roberta-large", "vera", 256, qv, paper="0.061M", note=HEAD_NOTE),
        glue("roberta-base", note="θ_d = d; D = r·Σ(in + out) of the 24 q,v layers"),
        glue("roberta-large", note="same d for large; D of the 48 q,v layers"),
        ablation("gaussian", note="dense Gaussian P at Uni-LoRA's d (regenerated from the seed, never stored)"),
        ablation("fastfood", note="Fastfood P at Uni-LoRA's d (O(D log d), structures regenerated from the seed)"),
        math("gemma-7b", "lora", 4, paper="D = 12,500,992", note=f"all 7 linear kinds × 28 layers, {all_kinds}"),
        math("gemma-7b", "unilora", 4, kwargs={"d": 524288}, paper="0.52M", note="d = 2^19 over D = 12,500,992"),
        math(
            "mistral-7b",
            "lora",
            4,
            paper="D = 10,485,760",
            note="all 7 linear kinds × 32 layers, GQA k/v out = 1024 (D = r · Σ(in + out) from the model config)",
        ),
        math("mistral-7b", "unilora", 4, kwargs={"d": 524288}, paper="0.52M", note="d = 2^19 over D = 10,485,760"),
        Row(
            "Llama-2-7B all-linear",
            "llama-2-7b",
            "lora",
            4,
            all_linear,
            paper="D = 9,994,240",
            note=f"all 7 linear kinds × 32 layers, {all_kinds}",
        ),
        prolora(
            "lora",
            8,
            note="the LoRA baseline rank of PRoLoRA's comparisons on all linear layers (authors' scripts: --lora_modules all, α = 16)",
        ),
        prolora(
            "prolora",
            8,
            kwargs={"unshared_rank": 1, "m": 2, "n": 2},
            paper="≈ ½ of LoRA r = 8",
            note="the abstract's claim of 'one time less trainable parameters' than LoRA; exact table numbers not verified offline, not quoted",
        ),
        prolora(
            "prolora",
            4,
            kwargs={"unshared_rank": 1, "m": 2, "n": 3},
            note="the paper's Figure 1 setting (r = 4, u = 1, m = 2, n = 3); ⌈h/m⌉, ⌈o/n⌉ since 3 ∤ 4096",
        ),
    ]
    return rows + machine_rows()


def projection_defaults(name: str) -> tuple[int, dict[str, Any]]:
    """Rank and kwargs of ``projection=<name>``: configs/projection/<name>.yaml, else the node derived from the
    file's ``paper`` declaration (AdapterConfig defaults if it has neither)."""
    spec = yaml_defaults(name) or {}
    return int(spec.get("rank", AdapterConfig().rank)), dict(spec.get("kwargs") or {})


def machine_rows() -> list[Row]:
    """Every registered projection, with its configs/projection defaults, on the two offline models."""
    rows = []
    for model in ("minilm", "smollm2-135m"):
        for name in projection_names():
            rank, kwargs = projection_defaults(name)
            defaults = get_projection_class(name).defaults
            kwargs = {k: v for k, v in kwargs.items() if k not in defaults or defaults[k] != v}  # show what differs
            rows.append(
                Row(
                    f"This machine ({model}, configs/projection defaults)",
                    model,
                    name,
                    rank,
                    None,
                    kwargs,
                    note="targets and head from configs/model; rank and non-default kwargs from configs/projection",
                )
            )
    return rows


def count_row(row: Row) -> dict[str, Any]:
    """count_parameters of the row, with the model yaml's modules_to_save counted as the head."""
    spec = load_model_spec(row.model)
    cfg = AdapterConfig(
        projection=row.projection,
        rank=row.rank,
        target_modules=row.resolved_targets(),
        projection_kwargs=row.kwargs,
        modules_to_save=list(spec.get("modules_to_save") or []),
    )
    return count_parameters(row.model, cfg)


def fmt(n: int) -> str:
    return f"{n:,}"


HEADER = [
    "# Parameter counts",
    "",
    "Generated offline by `python scripts/count_params.py` (models built on the meta device; no weights).",
    "*trainable*: numel the optimiser updates; *D*: length of θ_D (all LoRA factor entries); *stored*: numel",
    "kept after training for inference; *head*: numel of `modules_to_save` (e.g. the classifier), trained",
    "but not in *trainable*. The *paper* column quotes the source; *note* explains any difference.",
]
TABLE_HEAD = [
    "| model | projection | r | kwargs | trainable | D | stored | head | paper | note | command |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
]


def render_row(row: Row) -> str:
    kwargs = ", ".join(f"{k}={v}" for k, v in row.kwargs.items()) or "—"
    try:
        c = count_row(row)
        cells = [fmt(c["trainable"]), fmt(c["D"]), fmt(c["stored"]), fmt(c["modules_to_save"]), row.paper, row.note]
    except LoraZooError as exc:
        cells = ["—", "—", "—", "—", row.paper, f"not valid here: {exc}"]
    return "| " + " | ".join([row.model, row.projection, str(row.rank), kwargs, *cells, f"`{row.command()}`"]) + " |"


def render(rows: list[Row]) -> str:
    """Markdown: one table per section; rows of unregistered projections are listed as skipped."""
    registered = set(projection_names())
    lines, skipped, section = list(HEADER), [], None
    for row in rows:
        if row.projection not in registered:
            skipped.append(f"- {row.section}: `{row.projection}` on {row.model} — `{row.command()}`")
            continue
        if row.section != section:
            section = row.section
            lines += ["", f"## {section}", "", *TABLE_HEAD]
        lines.append(render_row(row))
    if skipped:
        lines += ["", "## Skipped", "", "Projection not registered when this table was generated:", "", *skipped]
    return "\n".join(lines) + "\n"


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--kwargs``: ``k=v,k=v`` (values as YAML) or a JSON object; the inverse of format_kwargs."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        value = yaml.safe_load(text)  # JSON is YAML
        if not isinstance(value, dict):
            raise SystemExit(f"--kwargs {text!r} is not a mapping")
        return value
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--kwargs item {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (atomic_write's writer: the table lands whole or not at all)."""
    Path(path).write_text(text)


def main(argv: list[str] | None = None) -> int:
    """``lorazoo-count``: the whole table, or one row from the command line; exit 2 on a setting lorazoo refuses."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="a name in configs/model (roberta-base, llama-2-7b, ...); omit for the whole table"
    )
    parser.add_argument("--projection", default="lora")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", help="comma-separated module names or 'all-linear' (default: the model yaml's)")
    parser.add_argument(
        "--kwargs", help="projection_kwargs as key=value,key=value (values parsed as YAML) or a JSON object"
    )
    parser.add_argument(
        "--out", type=Path, help=f"markdown output (default for the whole table: {DEFAULT_OUT.relative_to(REPO)})"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # counting reads local configs only; never reach for the hub

    start = time.perf_counter()
    if args.model:
        targets = None
        if args.targets:
            targets = args.targets if args.targets == "all-linear" else args.targets.split(",")
        rows = [Row("command line", args.model, args.projection, args.rank, targets, parse_kwargs(args.kwargs))]
        if args.projection not in projection_names():
            print(
                f"error: projection {args.projection!r} is not registered; registered: {projection_names()}",
                file=sys.stderr,
            )
            return 2
        out = args.out
    else:
        rows, out = paper_rows(), args.out or DEFAULT_OUT
    try:
        text = render(rows)
    except LoraZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text, end="")
    if out is not None:
        atomic_write(out, partial(write_text, text=text))
        print(f"\nwrote {out} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
