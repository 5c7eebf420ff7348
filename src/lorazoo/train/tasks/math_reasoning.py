"""GSM8K (Cobbe et al. 2021): fine-tune on solutions, score exact match of the final number.

Train on GSM8K train (or MetaMathQA from the hub with ``task.source=metamathqa``); evaluate on GSM8K
test by greedy generation. The reference answer is the number after '####'; the prediction is the last
number in the generated text (commas dropped). Local files: ``task.data_dir`` with train.jsonl, test.jsonl.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...io import atomic_write
from ..errors import ConfigError, DataFormatError
from ..options import check_choice
from .base import TaskOptions, load_hub_split, read_jsonl, register_task, require_file, require_keys, subsample
from .causal import CausalLMTask, generate

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
PROMPT = "Question: {question}\nAnswer:"


@dataclass
class Gsm8kOptions(TaskOptions):
    max_length: int = 512
    source: str = "gsm8k"  # gsm8k | metamathqa (training data; evaluation is always GSM8K test)
    hub_id: str = "openai/gsm8k"
    metamath_hub_id: str = "meta-math/MetaMathQA"
    max_new_tokens: int = 256
    save_predictions: bool = True  # predictions.jsonl in the run dir


def final_number(text: str) -> str | None:
    """The last number in ``text`` (GSM8K references: the text after '####'), normalised."""
    if "####" in text:
        text = text.split("####")[-1]
    found = NUMBER.findall(text)
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    try:
        number = float(value)
    except ValueError:
        return None
    return str(int(number)) if number.is_integer() else repr(number)


@register_task("math/gsm8k", "math")
class Gsm8kTask(CausalLMTask):
    Options = Gsm8kOptions

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        check_choice(options.source, ("gsm8k", "metamathqa"), "task.source")
        if options.name not in ("math/gsm8k",):
            raise ConfigError(f"unknown math task {options.name!r}; valid: ['math/gsm8k'] (MetaMathQA: task.source=metamathqa)")
        self.references: list[str] = []

    def _gsm8k(self, split: str) -> list[tuple[str, str]]:
        opts = self.options
        if opts.data_dir:
            path = require_file(Path(opts.data_dir) / f"{split}.jsonl", f"task.data_dir must hold {split}.jsonl")
            rows = read_jsonl(path)
            for i, row in enumerate(rows, 1):
                require_keys(row, ("question", "answer"), f"{path}:{i}")
        else:
            hint = "set task.data_dir=<dir with GSM8K train.jsonl and test.jsonl>"
            rows = list(load_hub_split(opts.hub_id, "main", split, hint))
        return [(PROMPT.format(question=r["question"].strip()), " " + r["answer"].strip()) for r in rows]

    def load(self) -> None:
        opts = self.options
        if opts.source == "metamathqa":
            hint = "MetaMathQA needs the hub; use task.source=gsm8k with task.data_dir for offline runs"
            rows = load_hub_split(opts.metamath_hub_id, None, "train", hint)
            train = [(PROMPT.format(question=r["query"].strip()), " " + r["response"].strip()) for r in rows]
        else:
            train = self._gsm8k("train")
        self.train_pairs = subsample(train, opts.max_train_samples, opts.split_seed)
        self.eval_pairs = subsample(self._gsm8k("test"), opts.max_eval_samples, opts.split_seed + 1)
        self.references = [final_number(a) for _, a in self.eval_pairs]
        if any(r is None for r in self.references):
            bad = self.references.index(None)
            raise DataFormatError(f"GSM8K test record {bad + 1} has no final number after '####'")

    def metric_keys(self) -> list[str]:
        return ["exact_match"]

    def final_evaluate(self, trainer: Any, model: Any, tokenizer: Any, output_dir: Path) -> dict[str, float]:
        prompts = [p for p, _ in self.eval_pairs]
        texts = generate(model, tokenizer, prompts, self.options.max_new_tokens, trainer.args.per_device_eval_batch_size)
        preds = [final_number(t) for t in texts]
        correct = [p == r for p, r in zip(preds, self.references)]
        if self.options.save_predictions:
            lines = [json.dumps({"prompt": q, "generation": t, "prediction": p, "reference": r, "correct": c})
                     for q, t, p, r, c in zip(prompts, texts, preds, self.references, correct)]
            atomic_write(output_dir / "predictions.jsonl", lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
        return {"exact_match": sum(correct) / max(len(correct), 1)}
