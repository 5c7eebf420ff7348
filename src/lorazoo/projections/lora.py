"""LoRA (Hu et al. 2021) as the identity projection: the one flat parameter *is* θ_D."""

from __future__ import annotations

import torch
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections.base import PaperSettings, Projection, register_projection


@register_projection("lora")
class LoRAProjection(Projection):
    paper = PaperSettings(
        rank=8,
        alpha=8,
        lr=4e-4,
        source="r = 8, α = 8: the GLUE LoRA row of the VB-LoRA/VeRA comparisons; lr 4e-4: "
        "microsoft/LoRA@c4593f0:examples/NLU/roberta_base_mrpc.sh (--learning_rate 4e-4)",
    )
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
