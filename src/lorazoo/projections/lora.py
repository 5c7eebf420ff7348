"""LoRA (Hu et al. 2021) as the identity projection: the one flat parameter *is* θ_D."""

from __future__ import annotations

import torch
from torch import nn

from ..config import AdapterConfig
from ..layout import Layout
from .base import Projection, register_projection


@register_projection("lora")
class LoRAProjection(Projection):
    is_linear = True
    uses_alpha = True
    zero_at_init = True

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        self.theta = nn.Parameter(self.lora_init())

    def forward(self) -> torch.Tensor:
        return self.theta  # no copy: the layers read views of the parameter itself

    def matrix(self) -> torch.Tensor:
        eye = torch.arange(self.D, device=self.theta.device)
        values = torch.ones(self.D, dtype=self.theta.dtype, device=self.theta.device)
        return torch.sparse_coo_tensor(torch.stack([eye, eye]), values, (self.D, self.D)).coalesce()
