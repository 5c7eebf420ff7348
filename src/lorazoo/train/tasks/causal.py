"""Causal-LM fine-tuning shared by math and instruction tasks: loss on the answer tokens only, and
batched greedy (or sampled) generation for evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from lorazoo.train.tasks.base import Task
from lorazoo.train.tasks.encoding import IGNORE, causal_collator, encode_columns


class CausalLMTask(Task):
    """Subclasses fill ``train_pairs`` / ``eval_pairs`` with (prompt, answer) strings in ``load()``."""

    task_type: ClassVar[str] = "causal_lm"
    prediction_loss_only: ClassVar[bool] = True  # logits of a vocabulary are too big to gather

    def __init__(self, options: Any, seed: int):
        super().__init__(options, seed)
        self.train_pairs: list[tuple[str, str]] = []
        self.eval_pairs: list[tuple[str, str]] = []

    def encode(self, prompt: str, answer: str, tokenizer: Any) -> dict[str, list[int]]:
        """prompt + answer + eos, truncated from the end; labels mask the prompt (and padding)."""
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + answer_ids)[: self.options.max_length]
        labels = ([IGNORE] * len(prompt_ids) + answer_ids)[: self.options.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    def datasets(self, tokenizer: Any) -> tuple[Any, Any]:
        def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
            rows = [self.encode(p, a, tokenizer) for p, a in zip(batch["prompt"], batch["answer"])]
            return {key: [row[key] for row in rows] for key in ("input_ids", "attention_mask", "labels")}

        return tuple(
            encode_columns(
                {"prompt": [p for p, _ in pairs], "answer": [a for _, a in pairs]}, encode, drop=["prompt", "answer"]
            )
            for pairs in (self.train_pairs, self.eval_pairs)
        )

    def collator(self, tokenizer: Any) -> Callable:
        return causal_collator(tokenizer)

    def summary(self) -> dict[str, Any]:
        return {"train_examples": len(self.train_pairs), "eval_examples": len(self.eval_pairs)}

    def derived_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        loss = metrics.get("loss")
        return {} if loss is None else {"perplexity": float(math.exp(min(loss, 50.0)))}


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    do_sample: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[str]:
    """Completions (new text only) for each prompt; left padding so every prompt ends where generation starts.
    ``progress``: a bar over the prompts (generation is the slow, otherwise silent part of a math/instruct run)."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    device = next(p for p in model.parameters()).device
    outputs: list[str] = []
    bar = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not progress)
    try:
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            enc = {key: enc[key].to(device) for key in ("input_ids", "attention_mask")}
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "do_sample": do_sample,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            }
            if do_sample:
                torch.manual_seed(seed + start)
                kwargs.update(top_p=0.9, temperature=0.7)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            out = model.generate(**enc, **kwargs)
            outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            bar.update(len(enc["input_ids"]))
    finally:
        bar.close()
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs
