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
LORAXS = "LoRA-XS (Bałazy et al. 2024, arXiv:2405.17604)"
TINYLORA = "TinyLoRA (Morris et al. 2026, arXiv:2602.04118)"
RANDLORA = "RandLoRA (Albert et al. 2025, arXiv:2502.00987)"
NOLA = "NOLA (Koohpayegani et al. 2024, arXiv:2310.02556)"
NOT_VERIFIED = "the paper's table value was not verified offline, so none is quoted"


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
    return rows + newer_method_rows() + machine_rows()


def newer_method_rows() -> list[Row]:
    """LoRA-XS, TinyLoRA, RandLoRA and NOLA at their authors' settings; each note names the file the setting is read
    from, and the paper column quotes only a number read in a citable source."""
    all_linear = "all-linear"
    loraxs_glue = partial(
        Row,
        f"{LORAXS} GLUE, authors' code",
        "roberta-large",
        "loraxs",
        targets=["query", "value", "attention.output.dense", "output.dense"],
    )
    loraxs_math = partial(Row, f"{LORAXS} math, authors' code", projection="loraxs", rank=64, targets=all_linear)
    glue_note = (
        "24 layers × 4 modules × r²; targets from MohammadrezaBanaei/LoRA-XS@e50b1a8:main_glue.py, ranks 4…25 from "
        f"scripts/run_glue.py; the classifier head is trained too but not counted; {NOT_VERIFIED}"
    )
    math_note = (
        "all 7 linear kinds × r² (r = 64: MohammadrezaBanaei/LoRA-XS@e50b1a8:scripts/run_math_tuning.sh, targets: "
        f"main_math_tuning.py); {NOT_VERIFIED}"
    )
    tiny = partial(Row, f"{TINYLORA}, settings as PEFT 0.21", "llama-2-7b", "tinylora", 2, all_linear)
    # the authors pass ["query", "key", "value", "dense"] with task_type SEQ_CLS: PEFT 0.21 then adapts the six
    # encoder kinds below and leaves classifier.dense to modules_to_save (checked on a tiny RoBERTa)
    encoder = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
    rand_note = (
        "6 encoder kinds × L layers, each n (r + m) with m = hidden, n = ⌈m / r⌉; r and models from "
        "PaulAlbert31/RandLoRA@75cb6a0:GLUE/train_all.sh, targets ['query', 'key', 'value', 'dense'] from "
        f"@e31287f:GLUE/run_glue.py as PEFT 0.21 resolves them (classifier.dense stays in the head); {NOT_VERIFIED}"
    )
    nola_table = "UCDvision/NOLA@94e33e6:docs/assets/images/nola_t1.jpg"
    nola = partial(Row, f"{NOLA} LLaMA-2 Alpaca table, {nola_table}", "llama-2-7b", targets=all_linear)
    return [
        loraxs_glue(rank=4, note=glue_note),
        loraxs_glue(rank=25, note=glue_note),
        loraxs_math("mistral-7b", note=math_note),
        loraxs_math("gemma-7b", note=f"the script's commented-out BASE_MODEL; {math_note}"),
        tiny(
            kwargs={"u": 13, "weight_tying": 1.0},
            paper="13 (title)",
            note="'Learning to Reason in 13 Parameters' (the title, as peft 0.21.2 tuners/tinylora/config.py quotes "
            "it): weight_tying 1 shares one v, so d = u = 13 whatever the model and targets; the paper's base model "
            "and targets were not verified offline (r = 2: PEFT's 'the paper recommends r=2')",
        ),
        tiny(
            kwargs={"u": 64},
            note=f"PEFT 0.21 TinyLoraConfig defaults (u 64, weight_tying 0): one v per module, d = 224 × u; {NOT_VERIFIED}",
        ),
        Row(f"{RANDLORA} GLUE, authors' code", "roberta-base", "randlora", 64, encoder, note=rand_note),
        Row(f"{RANDLORA} GLUE, authors' code", "roberta-large", "randlora", 100, encoder, note=rand_note),
        nola(
            "lora",
            1,
            paper="2.50M",
            note="the table's LoRA r = 1 column: all 7 linear kinds × 32 layers (the authors' qlora.py adapts every "
            "linear layer but lm_head)",
        ),
        nola(
            "nola",
            16,
            kwargs={"num_basis": 128},
            paper="0.06M",
            note="the table's NOLA r = 16 column: 2 k per module × 224 modules; 0.06M fits k = 128 (the default of "
            "the authors' e009fdc:llama/peft/tuners/lora.py), not the 512 their 7B script passes (next row)",
        ),
        nola(
            "nola",
            16,
            kwargs={"num_basis": 512},
            note="k = 512 of UCDvision/NOLA@e009fdc:llama/scripts/finetune_llama2_alpaca_7b_nola.sh; the same table's "
            "70B column (0.57M) is what k = 512 gives there, its 7B column matches k = 128 (previous row)",
        ),
    ]


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
