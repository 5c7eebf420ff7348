"""``model.quantization``: a 4-/8-bit bitsandbytes base (QLoRA, Dettmers et al. 2023) under the adapter.

The quantisation is transformers' own (``BitsAndBytesConfig`` passed to ``from_pretrained``). A base
that is built in memory first (``tiny:`` random models, GGUF files that transformers dequantises to
float on load) is written to a temporary directory and loaded back through the same ``from_pretrained``
path, so every source ends up quantised by one code path.
"""

from __future__ import annotations

import tempfile
from typing import Any

import torch


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
