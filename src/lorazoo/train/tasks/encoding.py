"""Tokenized splits as `datasets.Dataset`s built with ``.map``, and the collators transformers provides."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

IGNORE = -100  # label id the loss skips (prompt tokens, padding)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Map: 100%" bar per split (restored afterwards if the user had bars on)."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was_enabled = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            enable_progress_bar()


def encode_columns(
    columns: dict[str, list[Any]], encode: Callable[[dict[str, list[Any]]], dict[str, Any]], drop: list[str]
) -> Any:
    """``Dataset.from_dict(columns).map(encode, batched=True)`` in memory, without the raw ``drop`` columns."""
    from datasets import Dataset

    with _quiet_progress():
        return Dataset.from_dict(columns).map(encode, batched=True, remove_columns=drop, keep_in_memory=True)


def causal_collator(tokenizer: Any) -> Callable:
    """Right padding (input ids with the pad token, mask 0, labels IGNORE) by DataCollatorForSeq2Seq.

    The collator pads on the tokenizer's side; a copy set to the right keeps positions of the real
    tokens at 0..n-1 whatever side the tokenizer uses for generation.
    """
    from transformers import DataCollatorForSeq2Seq

    right = copy.copy(tokenizer)
    right.padding_side = "right"
    return DataCollatorForSeq2Seq(right, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")
