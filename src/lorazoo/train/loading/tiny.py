"""The tiny model configs: random-weight models that build in milliseconds, for fast tests and smoke runs.

ONE table for every caller: ``model.pretrained=tiny:<kind>`` runs, the config checks that read a model's shape
without weights, the benchmarks' smoke model and the tests' builders. A caller that needs another size passes
overrides (``tiny_fields("llama", max_position_embeddings=64)``) instead of keeping its own copy of the table.
The vocabulary size is not in the table: a run takes it from its tokenizer.
"""

from __future__ import annotations

from typing import Any

from lorazoo.train.errors import ConfigError

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "bert": dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512
    ),
    "llama": dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    ),
}


def tiny_fields(kind: str, **overrides: Any) -> dict[str, Any]:
    """The config fields of tiny ``kind`` (a transformers model type) with ``overrides`` on top."""
    if kind not in TINY_CONFIGS:
        raise ConfigError(f"model.pretrained='tiny:{kind}' is not valid; choose one of {sorted(TINY_CONFIGS)}")
    return {**TINY_CONFIGS[kind], **overrides}


def tiny_config(kind: str, **overrides: Any) -> Any:
    """The transformers config of tiny ``kind`` (``AutoConfig.for_model``), ``overrides`` on top."""
    from transformers import AutoConfig

    return AutoConfig.for_model(kind, **tiny_fields(kind, **overrides))
