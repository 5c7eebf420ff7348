"""Checks of a run's options against this machine and the model's config, before data or weights load.

Each failure is one ConfigError line naming the bad value and what is valid, so a run that cannot be
honoured stops in seconds instead of raising deep inside transformers after the model has loaded.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError
from .options import ModelOptions, TrainerOptions

# models whose position ids start after the padding index (RoBERTa family): usable = max_position_embeddings - pad - 1
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod"}


def check_precision(trainer: TrainerOptions) -> None:
    if trainer.precision != "bf16":
        return
    from transformers.utils import is_torch_bf16_gpu_available

    if not is_torch_bf16_gpu_available():
        raise ConfigError(
            "trainer.precision=bf16 is not supported here (no CUDA device with bf16); valid: fp32, "
            "or bf16 on a GPU that supports it (model.dtype=bfloat16 still stores the base in bf16)"
        )


def model_positions(model: ModelOptions) -> int | None:
    """How many token positions the base model has, read from its config alone (None when unknown offline)."""
    from .models import TINY_CONFIGS, resolve_source

    if model.pretrained.startswith("tiny:"):
        fields = {**TINY_CONFIGS.get(model.pretrained.split(":", 1)[1], {}), **model.dims}
        return fields.get("max_position_embeddings")
    try:
        source = resolve_source(model.pretrained, model.gguf_file)
    except Exception:  # an unavailable model is reported by the model loader itself
        return None
    if not os.path.isfile(os.path.join(source, "config.json")):
        return None  # a hub id: not fetched just for this check
    from transformers import AutoConfig

    try:
        config: Any = AutoConfig.from_pretrained(source)
    except (OSError, ValueError):
        return None
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions and getattr(config, "model_type", "") in _OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def check_max_length(max_length: Any, model: ModelOptions) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ConfigError(f"task.max_length={max_length!r} is invalid; valid: a positive integer")
    positions = model_positions(model)
    if positions is not None and max_length > positions:
        raise ConfigError(
            f"task.max_length={max_length} is invalid; valid: 1..{positions} (the positions of model={model.name!r})"
        )
