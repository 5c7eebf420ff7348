"""Instruction tuning on Alpaca-format records (instruction, input, output) (Taori et al. 2023).

Data: ``task.data_file`` (a JSON list or JSON lines) or the hub (``tatsu-lab/alpaca``). A fixed
``eval_size`` records are held out (split by ``split_seed``). Evaluation: held-out loss and perplexity,
plus ``num_generations`` sampled answers to held-out prompts written to ``generations.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorazoo.files import atomic_write
from lorazoo.train.tasks.base import (
    TaskOptions,
    load_hub_split,
    located_records,
    register_task,
    require_file,
    require_keys,
    subsample,
)
from lorazoo.train.tasks.causal import CausalLMTask, generate

# The Stanford Alpaca prompt templates (github.com/tatsu-lab/stanford_alpaca, train.py).
WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
FIELDS = ("instruction", "output")
OPTIONAL: dict[str, tuple[type, ...]] = {"input": (str,)}


@dataclass
class AlpacaOptions(TaskOptions):
    max_length: int = 512
    data_file: str | None = None  # local Alpaca json (list) or jsonl; null = hub
    hub_id: str = "tatsu-lab/alpaca"
    eval_size: int = 200  # held-out records (before max_eval_samples)
    num_generations: int = 5
    max_new_tokens: int = 128
    do_sample: bool = True


def read_records(path: Path) -> list[dict]:
    """A JSON list of records, or JSON lines; errors name the file and line (or record), field types included."""
    return [record for _, record in located_records(path, FIELDS, OPTIONAL)]


def checked_hub_records(records: Any, hub_id: str) -> list[dict]:
    """Hub records with the same field checks as a local file, each named by its index."""
    out = [dict(record) for record in records]
    for i, record in enumerate(out, 1):
        require_keys(record, FIELDS, f"{hub_id} train record {i}", OPTIONAL)
    return out


def prompt_of(record: dict) -> str:
    template = WITH_INPUT if (record.get("input") or "").strip() else NO_INPUT
    return template.format(instruction=record["instruction"].strip(), input=(record.get("input") or "").strip())


@register_task("instruct/alpaca", "instruct")
class AlpacaTask(CausalLMTask):
    Options = AlpacaOptions
    greater_is_better = False  # perplexity

    def load(self) -> None:
        opts = self.options
        if opts.data_file:
            records = read_records(require_file(Path(opts.data_file), "set task.data_file=<Alpaca json>"))
        elif opts.data_dir:
            path = Path(opts.data_dir) / "alpaca_data.json"
            records = read_records(
                require_file(path, "task.data_dir must hold alpaca_data.json (or set task.data_file)")
            )
        else:
            hub = load_hub_split(opts.hub_id, None, "train", "set task.data_file=<Alpaca-format json>")
            records = checked_hub_records(hub, opts.hub_id)
        pairs = [(prompt_of(r), r["output"].strip()) for r in records]
        held = subsample(list(range(len(pairs))), min(opts.eval_size, len(pairs) // 2), opts.split_seed)
        held_set = set(held)
        train = [p for i, p in enumerate(pairs) if i not in held_set]
        self.train_pairs = subsample(train, opts.max_train_samples, opts.split_seed + 1)
        self.eval_pairs = subsample([pairs[i] for i in held], opts.max_eval_samples, opts.split_seed + 2)

    def metric_keys(self) -> list[str]:
        return ["perplexity"]

    def final_evaluate(self, trainer: Any, model: Any, tokenizer: Any, output_dir: Path) -> dict[str, float]:
        opts = self.options
        chosen = self.eval_pairs[: opts.num_generations]
        texts = generate(
            model,
            tokenizer,
            [p for p, _ in chosen],
            opts.max_new_tokens,
            trainer.args.per_device_eval_batch_size,
            do_sample=opts.do_sample,
            seed=self.seed,
            progress=not trainer.args.disable_tqdm,
        )
        lines = [json.dumps({"prompt": p, "reference": r, "generation": t}) for (p, r), t in zip(chosen, texts)]

        def write_lines(tmp: str) -> None:
            Path(tmp).write_text("\n".join(lines) + "\n")

        atomic_write(output_dir / "generations.jsonl", write_lines)
        return {"num_generations": len(texts)}
