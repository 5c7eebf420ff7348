"""Comparing a lorazoo LoRA with PEFT's: the PEFT model is given lorazoo's factors, so any difference left in
outputs or gradients is a difference in the computation, not in the initial values."""

from __future__ import annotations

from typing import Any

import torch

from lorazoo.adapted_layers import factors_from_theta


def copy_factors_to_peft(ours: Any, peft_model: Any) -> None:
    """Write the A_l, B_l that ``ours`` (an attached lora model) holds now into ``peft_model``'s LoRA layers."""
    theta = ours.projection().detach()
    with torch.no_grad():
        for entry in ours.layout:
            a, b = factors_from_theta(theta, entry)
            module = peft_model.base_model.model.get_submodule(entry.name)
            module.lora_A["default"].weight.copy_(a)
            module.lora_B["default"].weight.copy_(b)
