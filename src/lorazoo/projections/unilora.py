"""Uni-LoRA (Li et al. 2025): an isometric random projection with one nonzero per row.

Row i of P (one coordinate of θ_D) reads column idx[i] of θ_d with value 1/√n_j, where n_j is the
number of rows assigned to column j. The assignment is balanced (n_j ∈ {⌊D/d⌋, ⌈D/d⌉}), so
PᵀP = I_d exactly. θ_D = (θ_d · scale)[idx]: one gather forward, one scatter-add backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.options import option


def balanced_assignment(seed: int, sizes: list[int], widths: list[int]) -> np.ndarray:
    """Column index of every row: segment s of ``sizes[s]`` rows is spread over its own ``widths[s]`` columns.

    Rows are ordered by a seeded hash inside each segment and dealt round-robin to the columns, so every
    column of a segment receives ⌊size/width⌋ or ⌈size/width⌉ rows.
    """
    total = int(sum(sizes))
    segment = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((rng.random_bits(seed, "unilora/rows", total), segment))  # by segment, then hash
    seg_start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    col_start = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    seg_of_sorted = segment[order]
    rank_in_segment = np.arange(total, dtype=np.int64) - seg_start[seg_of_sorted]
    columns = np.empty(total, dtype=np.int64)
    columns[order] = col_start[seg_of_sorted] + rank_in_segment % np.asarray(widths, dtype=np.int64)[seg_of_sorted]
    return columns


def split_proportionally(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` columns over segments in proportion to their sizes (largest remainder, ≥ 1 each)."""
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    exact = total * sizes_arr / sizes_arr.sum()
    widths = np.maximum(np.floor(exact).astype(np.int64), 1)
    widths = np.minimum(widths, np.asarray(sizes))
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if widths.sum() >= total:
            break
        if widths[i] < sizes[i]:
            widths[i] += 1
    while widths.sum() > total:  # the ≥ 1 floor overshot: take back from the widest segments
        widths[int(np.argmax(widths))] -= 1
    return widths.tolist()


@dataclass(frozen=True)
class UniLoRAOptions:
    d: int = option(
        23040, positive=True, high="D", high_name="D, the number of LoRA factor entries"
    )  # paper GLUE setting (RoBERTa q,v, r = 4)
    share: str = option("global", choices=["global", "local"])  # global = the paper's one θ for the model
    init_range: float = option(0.02, positive=True)  # θ_d ~ U(±0.02), as PEFT
    save_indices: bool = option(False)


@register_projection("unilora")
class UniLoRAProjection(Projection):
    paper = PaperSettings(
        rank=4,
        lr=5e-3,
        source="r = 4, d = 23,040: Uni-LoRA (arXiv:2506.00799) GLUE setting; θ lr 5e-3: "
        "KaiyangLi1992/Uni-LoRA@3387a6e:NLU/NLU/scripts_unilora_qv/roberta_base_sst2.sh (--learning_rate_vector_bank 5e-3)",
    )
    Options = UniLoRAOptions
    is_linear = True
    tiny_case = {"d": 64}
    indices: torch.Tensor
    column_scale: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        d, share = self.opts.d, self.opts.share
        if share == "global":
            sizes, widths = [layout.D], [d]
        else:
            sizes = [e.numel for e in layout]
            if d < len(sizes):
                raise ConfigError(f"unilora: d={d} is invalid with share=local; need d >= {len(sizes)} (one per layer)")
            widths = split_proportionally(d, sizes)
        columns = balanced_assignment(config.seed, sizes, widths)
        counts = np.bincount(columns, minlength=d)
        self.theta = self.small_uniform_theta(d)
        self.register_buffer("indices", torch.from_numpy(columns), persistent=False)
        self.register_buffer("column_scale", rng.as_tensor(1.0 / np.sqrt(counts)), persistent=False)

    def forward(self) -> torch.Tensor:
        return (self.theta * self.column_scale).index_select(0, self.indices)

    def matrix(self) -> torch.Tensor:
        rows = torch.arange(self.D, device=self.indices.device)
        values = self.column_scale[self.indices].to(self.theta.dtype)
        return torch.sparse_coo_tensor(
            torch.stack([rows, self.indices]), values, (self.D, self.theta.numel())
        ).coalesce()

    def saved_buffer_names(self) -> set[str]:
        return {"indices"} if self.opts.save_indices else set()
