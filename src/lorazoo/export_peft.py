"""Turn a lorazoo adapter into a plain PEFT LoRA adapter that PEFT and vLLM can serve.

    lorazoo-export <adapter_dir> <out_dir> [--base <local dir or hub id>] [--gguf-file F]
                   [--max-rank N [--allow-truncation]]
    (or: python scripts/export_peft.py ..., python -m lorazoo.export_peft ...)

The base model is the one named in the adapter's config (``base_model_name_or_path``; ``packaged:<module>``
names resolve to the installed package) unless ``--base`` points elsewhere. ``--max-rank`` is a server's rank
limit (vLLM: ``--max-lora-rank``, at most 512): ΔW is re-factorised under it exactly, or refused with the
error a cut would cause unless ``--allow-truncation`` (then the cut is written and its error recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import transformers
from torch import nn

from lorazoo import LoraZooError, load_adapter
from lorazoo.files import CONFIG_NAME, read_adapter_config
from lorazoo.packaged import resolve_source
from lorazoo.rank_limit import EXPORT_RECORD


def load_base(adapter_dir: Path, base: str | None, gguf_file: str | None) -> nn.Module:
    """The adapter's base model, built with the transformers class its config names (``tiny:`` bases are
    random and cannot be rebuilt from files, so they need ``--base``)."""
    config, _ = read_adapter_config(adapter_dir)
    raw = json.loads((adapter_dir / CONFIG_NAME).read_text())
    name = base or config.base_model_name_or_path
    if not name or name.startswith("tiny:"):
        raise LoraZooError(f"adapter base {name!r} cannot be loaded from files; pass --base <local dir or hub id>")
    class_name = raw.get("base_model_class") or "AutoModel"
    model_class = getattr(transformers, class_name, None)
    if not (isinstance(model_class, type) and hasattr(model_class, "from_pretrained")):
        raise LoraZooError(f"base_model_class {class_name!r} in {CONFIG_NAME} is not a transformers model class")
    source = resolve_source(name, gguf_file)
    if gguf_file is None and Path(source).is_dir() and not (Path(source) / "config.json").exists():
        ggufs = sorted(Path(source).glob("*.gguf"))
        gguf_file = ggufs[0].name if ggufs else None
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    if raw.get("num_labels") and "SequenceClassification" in class_name:
        kwargs["num_labels"] = raw["num_labels"]
    return model_class.from_pretrained(source, trust_remote_code=False, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``lorazoo-export``: write the PEFT adapter and say its rank; exit 2 with a one-line error when refused."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("adapter_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--base", help="local directory or hub id of the base model (default: the adapter's)")
    parser.add_argument("--gguf-file", help="GGUF file name inside the base directory, for GGUF bases")
    parser.add_argument("--max-rank", type=int, help="the serving rank limit (vLLM's --max-lora-rank, <= 512)")
    parser.add_argument("--allow-truncation", action="store_true", help="over --max-rank: write the SVD cut")
    args = parser.parse_args(argv)
    try:
        model = load_adapter(load_base(args.adapter_dir, args.base, args.gguf_file), args.adapter_dir)
        model.export_peft_lora(args.out_dir, max_rank=args.max_rank, allow_truncation=args.allow_truncation)
    except (LoraZooError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rank = json.loads((args.out_dir / "adapter_config.json").read_text())["r"]
    print(f"wrote a PEFT LoRA adapter (r={rank}, {len(model.layout)} modules) to {args.out_dir}")
    record = args.out_dir / EXPORT_RECORD
    if record.is_file() and json.loads(record.read_text())["truncated"]:
        error = json.loads(record.read_text())["max_relative_error"]
        print(f"TRUNCATED to rank {rank}: largest relative ΔW error {error:.3g} (see {record})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
