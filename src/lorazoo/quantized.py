"""bitsandbytes-quantised base weights (QLoRA bases): read them as float, write a float sum back.

A 4-/8-bit Linear cannot take ``W += ΔW`` in place: its storage holds codes, not values (writing into
the int8 tensor silently changes nothing useful; the 4-bit tensor has a packed shape). Merging is
therefore dequantise → add → requantise, as PEFT does (peft@0.21 tuners/lora/bnb.py ``merge``), and
the merged weight is exact only up to one requantisation:

* 8-bit (LLM.int8 row-wise absmax, ``int8_vectorwise_quant``): every element is within
  ``absmax(row) / 254`` (half a code step) of W + ΔW, plus the fp16 rounding bitsandbytes applies first;
* 4-bit (blockwise, ``blocksize`` elements per absmax): within ``gap/2 · absmax(block)``, where ``gap`` is
  the widest distance between adjacent code values (nf4: 1 − 0.7230 → 0.139·absmax), plus, with double
  quantisation, the 8-bit error of the block's absmax itself.

``requantization_bound`` returns that bound for a weight; ``merge`` reports the achieved error.
Unmerging requantises again, so merge → unmerge restores W only within twice the bound.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from lorazoo.errors import AdapterStateError

QUANTIZED_PARAMS = {"Params4bit": "4bit", "Int8Params": "8bit"}


def quantization_of(module: nn.Module) -> str | None:
    """``"4bit"``/``"8bit"`` for a bitsandbytes layer, else None (found by class name: no bnb import)."""
    weight = getattr(module, "weight", None)
    return QUANTIZED_PARAMS.get(type(weight).__name__) if weight is not None else None


def _int8_scales(module: nn.Module) -> torch.Tensor:
    scb = getattr(module.weight, "SCB", None)
    if scb is None:  # bitsandbytes moves CB/SCB to the layer state on the first forward
        scb = cast(Any, module.state).SCB
    return cast(torch.Tensor, scb)


def keep_4bit_layout_portable(model: nn.Module) -> None:
    """Turn off bitsandbytes' AVX512-BF16 repacking of every 4-bit layer in ``model``.

    On CPUs with AVX512-BF16, a 4-bit Linear's first no-grad eval forward rewrites its weight into a CPU-only
    packed layout (bitsandbytes 0.50 ``_convert_weight_packed_for_cpu``). That rewrite rounds every block's
    absmax to bfloat16, so the weights a model evaluates with would depend on the machine and change after
    its first eval call (measured: merged weights off by 1e-4 from the ones trained against), and it fails
    with a reshape error when in_features is not a multiple of the blocksize. lorazoo keeps the portable
    layout and bitsandbytes' generic 4-bit kernel: the same values on every CPU, before and after evaluation.
    """
    for module in model.modules():
        if quantization_of(module) == "4bit" and getattr(module, "support_avx512bf16_for_cpu", False):
            cast(Any, module).support_avx512bf16_for_cpu = False


def _unpack_4bit_(module: nn.Module) -> None:
    """Return a CPU-repacked 4-bit weight (a model not attached by lorazoo) to the standard layout, in place.

    Dequantising or requantising the packed layout would read codes in the wrong order; bitsandbytes itself
    unpacks the same way before saving. Its next no-grad forward repacks."""
    import bitsandbytes as bnb

    weight: Any = module.weight
    state = getattr(weight, "quant_state", None)
    if state is not None and getattr(state, "packing_format_for_cpu", False):
        weight.data, weight.quant_state = bnb.functional._convert_weight_packed_for_cpu_inverse(weight.data, state)


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    """The layer's weight as float32 (out × in), exactly what its forward multiplies by."""
    kind = quantization_of(module)
    if kind == "4bit":
        _unpack_4bit_(module)
        return _dequantized(kind, module.weight)
    if kind == "8bit":
        return _dequantized(kind, module.weight, _int8_scales(module))
    return cast(torch.Tensor, module.weight).detach().float()


def _dequantized(kind: str, weight: Any, scales: torch.Tensor | None = None) -> torch.Tensor:
    import bitsandbytes as bnb

    if kind == "4bit":
        return bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()
    scales = weight.SCB if scales is None else scales
    return bnb.functional.int8_vectorwise_dequant(weight.data, scales.to(weight.device)).float()


def _quantized_like(module: nn.Module, value: torch.Tensor) -> Any:
    """``value`` (float, out × in) quantised the way the layer's weight is, as a new parameter; the layer is
    not changed."""
    import bitsandbytes as bnb

    kind = quantization_of(module)
    weight: Any = module.weight  # a bitsandbytes Params4bit/Int8Params
    device = weight.device
    if kind == "4bit":
        _unpack_4bit_(module)
        weight = module.weight
        options: dict[str, Any] = {k: v for k, v in weight.__dict__.items() if not k.startswith("_")}
        options.update(requires_grad=False, bnb_quantized=False)
        for key in ("data", "quant_state"):
            options.pop(key, None)
        dtype = getattr(module, "compute_dtype", None) or torch.float32
        params4: Any = bnb.nn.Params4bit(value.to("cpu", dtype), **options)
        return params4.to(device)
    if kind == "8bit":
        params8: Any = bnb.nn.Int8Params(
            value.to("cpu", torch.float16), requires_grad=False, has_fp16_weights=weight.has_fp16_weights
        )
        return params8.to(device)
    raise TypeError(f"{type(module).__name__} is not a bitsandbytes-quantised layer")


def requantize_(module: nn.Module, value: torch.Tensor) -> None:
    """Replace the layer's quantised weight by ``value`` (float, out × in) quantised the same way."""
    module.weight = _quantized_like(module, value)
    if quantization_of(module) == "8bit":
        state: Any = module.state
        state.CB, state.SCB = None, None
        state.reset_grads()


def check_requantizable(module: nn.Module, value: torch.Tensor, where: str) -> None:
    """Refuse (one line) when quantising ``value`` as the layer's weight would land outside the stated bound.

    A dry run on a copy: nothing of the layer changes. bitsandbytes' CPU 4-bit quantisation of rows narrower
    than a multiple of the blocksize is one such case (measured up to 0.9 × the row's absmax at width 32);
    a merge there would silently hold other weights than the ones reported.
    """
    kind = cast(str, quantization_of(module))
    error = (_dequantized(kind, _quantized_like(module, value)) - value.float()).abs()
    bound = requantization_bound(module, value)
    over = error > bound + 1e-6
    if bool(over.any()):
        worst = int(torch.argmax(torch.where(over, error - bound, torch.zeros_like(error))))
        raise AdapterStateError(
            f"cannot merge into {where!r}: requantising W + ΔW as {kind} puts elements up to "
            f"{float(error.max()):.3g} away from it, over the format's bound (element {worst}: "
            f"{float(error.flatten()[worst]):.3g} > {float(bound.flatten()[worst]):.3g}); keep the adapter unmerged, "
            "or merge into a float copy of the base"
        )


def requantization_bound(module: nn.Module, value: torch.Tensor) -> torch.Tensor:
    """Per-element bound on |Q(value) − value| for this layer's quantisation (see the module docstring)."""
    kind = quantization_of(module)
    value = value.float()
    if kind == "8bit":
        absmax = value.abs().amax(dim=1, keepdim=True)
        return absmax / 254 + value.abs() * 2.0**-10  # half a code step, plus fp16 rounding of the input
    if kind == "4bit":
        state: Any = cast(Any, module.weight).quant_state
        code = state.code.float().sort().values
        half_gap = float((code[1:] - code[:-1]).max()) / 2
        blocks = value.reshape(-1, state.blocksize)
        absmax = blocks.abs().amax(dim=1, keepdim=True)
        nested = 2.0**-6 * absmax if getattr(state, "nested", False) else 0.0  # 8-bit error of the absmax itself
        return (half_gap * absmax + nested).expand_as(blocks).reshape(value.shape)
    return torch.zeros_like(value)
