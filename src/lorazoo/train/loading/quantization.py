"""``model.quantization``: a 4-/8-bit bitsandbytes base (QLoRA, Dettmers et al. 2023) under the adapter.

The quantisation is transformers' own (``BitsAndBytesConfig`` passed to ``from_pretrained``). A base
that is built in memory first (``tiny:`` random models, GGUF files that transformers dequantises to
float on load) is written to a temporary directory and loaded back through the same ``from_pretrained``
path, so every source ends up quantised by one code path.
"""

from __future__ import annotations

import importlib.util
import tempfile
from typing import Any

import torch

from .errors import ConfigError, ModelUnavailableError

QUANTIZATIONS = ("none", "8bit", "4bit")
QUANT_TYPES = ("nf4", "fp4")


def check_quantization(mode: str, quant_type: str, double_quant: Any, compute_dtype: str | None) -> None:
    """Fail in seconds (before any weights load) on a value bitsandbytes cannot honour."""
    if mode not in QUANTIZATIONS:
        raise ConfigError(f"model.quantization={mode!r} is not valid; choose one of {list(QUANTIZATIONS)}")
    if quant_type not in QUANT_TYPES:
        raise ConfigError(f"model.bnb_4bit_quant_type={quant_type!r} is not valid; choose one of {list(QUANT_TYPES)}")
    if not isinstance(double_quant, bool):
        raise ConfigError(f"model.bnb_4bit_use_double_quant={double_quant!r} is not valid; use true or false")
    if compute_dtype is not None and compute_dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(
            f"model.bnb_4bit_compute_dtype={compute_dtype!r} is not valid; choose float32, bfloat16, "
            "float16 or null (= model.dtype)"
        )
    if mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
        raise ModelUnavailableError(f"model.quantization={mode} needs bitsandbytes: pip install 'bitsandbytes>=0.45'")


def bnb_config(opts: Any) -> Any:
    """transformers' BitsAndBytesConfig for ``opts`` (a ModelOptions), or None for ``quantization: none``."""
    if opts.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    # fully trained modules (a classifier head) stay float: lorazoo copies and trains them
    skip = list(opts.modules_to_save) or None
    if opts.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    compute = getattr(torch, opts.bnb_4bit_compute_dtype or opts.dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=opts.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=opts.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=skip,
    )


def quantize_in_memory(model: Any, quantization_config: Any, **kwargs: Any) -> Any:
    """``model`` (float, in memory) reloaded through its own class's ``from_pretrained`` with ``quantization_config``."""
    with tempfile.TemporaryDirectory(prefix="lorazoo-quantize-") as tmp:
        model.save_pretrained(tmp)
        return type(model).from_pretrained(
            tmp, quantization_config=quantization_config, trust_remote_code=False, **kwargs
        )
