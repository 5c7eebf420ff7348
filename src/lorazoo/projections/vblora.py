"""VB-LoRA (Li et al. 2024, arXiv:2405.15179): every LoRA factor is mixed from one shared vector bank.

Each factor is cut into sub-vectors of length b (``vector_length``): every rank row of A_l along the
in-features axis (r × h/b sub-vectors) and every rank column of B_l along the out-features axis
(o/b × r), exactly as PEFT's vblora layer. Sub-vector i has logits z_i over the bank's ``num_vectors``
vectors and is the softmax-weighted mix of its top-k bank vectors:

    v_i = Σ_{j ∈ topk(z_i)} softmax(z_i[topk])_j · bank_j,     ΔW_l = B_l A_l  (s = 1).

The logits of all layers are ONE (S × num_vectors) parameter, rows in layout order (per layer: A's
(r, h/b) rows, then B's (o/b, r) rows, PEFT's shapes), so the forward is one top-k, one softmax, one
weighted ``embedding_bag`` over the bank and one gather that transposes the B sub-vectors into θ_D's
row-major (o × r) layout. Top-k makes it non-linear: ``matrix()`` is None.

Trainable: bank + logits. Stored for inference: bank + top-k indices + k − 1 weights per sub-vector
(the paper's count: an index below 2^8 is a quarter float). ``save_topk_only: true`` writes that form
(k − 1 logit gaps to the row's largest logit, which reproduce θ_D bit for bit). Such a file is for
inference only: loading it fills the other logits with −inf and freezes the adapter, so training
cannot resume from it; keep a full save for that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lorazoo.config import AdapterConfig
from lorazoo.errors import ConfigError
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.options import option
from lorazoo.sharding import copy_into, full

TOPK_KEYS = ("bank", "topk_indices", "topk_logit_gaps")


def index_dtype_and_fraction(num_vectors: int) -> tuple[torch.dtype, float]:
    """Smallest integer dtype for bank indices and its size in float32 units (PEFT's and the paper's count)."""
    if num_vectors < 2**8:
        return torch.uint8, 0.25
    if num_vectors < 2**15:
        return torch.int16, 0.5
    if num_vectors < 2**31:
        return torch.int32, 1.0
    return torch.int64, 2.0


def subvector_order(layout: Layout, b: int) -> np.ndarray:
    """θ_D[p] = V.flatten()[order[p]] where V (S × b) holds the mixed sub-vectors in logit-row order.

    A sub-vectors (r, h/b, b) are already vec(A_l) (row-major r × h). B sub-vectors come as
    (o/b, r, b) and B_l[t·b + c, i] = V_B[t, i, c]: a per-layer (1, 2) transpose.
    """
    parts = []
    for e in layout:
        parts.append(np.arange(e.a_offset, e.a_offset + e.a_numel, dtype=np.int64))
        b_block = np.arange(e.b_numel, dtype=np.int64).reshape(e.out_features // b, e.rank, b).transpose(0, 2, 1)
        parts.append(e.b_offset + b_block.reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class VBLoRAOptions:
    num_vectors: int = option(90, positive=True)  # paper GLUE setting
    vector_length: int = option(256, positive=True)  # paper GLUE setting; must divide every in/out size
    topk: int = option(2, positive=True, high="num_vectors", high_name="num_vectors")  # paper: k = 2
    init_bank: float = option(0.02, positive=True)  # PEFT: bank U(±0.02)
    init_logits_std: float = option(0.1, positive=True)  # PEFT: N(0, 0.1) (paper text: 0.01)
    save_topk_only: bool = option(False)  # bank + top-k only: inference-only files


@register_projection("vblora")
class VBLoRAProjection(Projection):
    paper = PaperSettings(
        rank=4,
        lr=1e-3,
        group_lrs=(("bank", 1e-3), ("logits", 1e-2)),
        source="r = 4: VB-LoRA (arXiv:2405.15179) GLUE setting; bank 1e-3, logits 1e-2: leo-yangli/VB-LoRA@b1a4230:"
        "NLU/NLU/scripts_vblora_qv/roberta_base_sst2.sh (--learning_rate_vector_bank, --learning_rate_logits); "
        "dropout 0: PEFT's default (the paper states none for GLUE)",
    )
    Options = VBLoRAOptions
    is_linear = False
    uses_alpha = False
    tiny_case = {"num_vectors": 8, "vector_length": 8, "topk": 2}
    order: torch.Tensor

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        num_vectors, b, self.topk = self.opts.num_vectors, self.opts.vector_length, self.opts.topk
        init_bank, init_std = self.opts.init_bank, self.opts.init_logits_std
        self._check_divisible(layout, b)
        self.num_subvectors = layout.D // b
        self.inference_only = False  # set by loading a save_topk_only file

        seed = config.seed
        bank = rng.uniform(seed, "vblora/bank", num_vectors * b, -init_bank, init_bank)
        logits = rng.normal(seed, "vblora/logits", self.num_subvectors * num_vectors) * init_std
        self.bank = nn.Parameter(rng.as_tensor(bank).view(num_vectors, b))
        self.logits = nn.Parameter(rng.as_tensor(logits).view(self.num_subvectors, num_vectors))
        self.register_buffer("order", torch.from_numpy(subvector_order(layout, b)), persistent=False)

    @staticmethod
    def _check_divisible(layout: Layout, b: int) -> None:
        sizes = [s for e in layout for s in (e.in_features, e.out_features)]
        common = math.gcd(*sizes) if sizes else b
        for e in layout:
            for axis, size in (("in_features", e.in_features), ("out_features", e.out_features)):
                if size % b:
                    raise ConfigError(
                        f"vblora: vector_length={b} does not divide {axis}={size} of module {e.name!r}; "
                        f"valid: a divisor of {common} (the gcd of all adapted sizes)"
                    )

    # ----------------------------------------------------------------- the projection
    def subvectors(self) -> torch.Tensor:
        """(S × b): every sub-vector as the softmax-weighted sum of its top-k bank vectors."""
        top_logits, indices = self.logits.topk(self.topk, dim=-1)
        weights = torch.softmax(top_logits, dim=-1)
        return F.embedding_bag(indices, self.bank, per_sample_weights=weights, mode="sum")

    def forward(self) -> torch.Tensor:
        return self.subvectors().reshape(-1).index_select(0, self.order)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The paper trains the bank and the logits with different learning rates (1e-3 / 1e-2 on GLUE)."""
        return {"bank": [self.bank], "logits": [self.logits]}

    def stored_numel(self) -> int:
        """Bank + per sub-vector k indices (fractional floats) and k − 1 weights, as the paper counts."""
        _, fraction = index_dtype_and_fraction(self.bank.shape[0])
        return self.bank.numel() + int(self.num_subvectors * ((self.topk - 1) + self.topk * fraction))

    # ----------------------------------------------------------------- persistence
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.opts.save_topk_only:
            return super().adapter_state_dict()
        dtype, _ = index_dtype_and_fraction(self.bank.shape[0])
        top_logits, indices = full(self.logits.detach()).topk(self.topk, dim=-1)
        # softmax only sees differences to the row maximum, which topk puts first: k − 1 gaps suffice
        gaps = (top_logits[:, 1:] - top_logits[:, :1]).contiguous()
        return {"bank": self.bank.detach(), "topk_indices": indices.to(dtype), "topk_logit_gaps": gaps}

    def load_adapter_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        if not self.opts.save_topk_only:
            super().load_adapter_state_dict(tensors)
            return
        if sorted(tensors) != sorted(TOPK_KEYS):
            raise ValueError(f"vblora top-k adapter needs tensors {list(TOPK_KEYS)}, got {sorted(tensors)}")
        bank, indices, gaps = (tensors[k] for k in TOPK_KEYS)
        expected = {
            "bank": tuple(self.bank.shape),
            "topk_indices": (self.num_subvectors, self.topk),
            "topk_logit_gaps": (self.num_subvectors, self.topk - 1),
        }
        for key, shape in expected.items():
            if tuple(tensors[key].shape) != shape:
                raise ValueError(f"tensor {key!r} has shape {tuple(tensors[key].shape)}, projection expects {shape}")
        indices = indices.to(torch.long)
        num_vectors = self.bank.shape[0]
        if indices.numel() and (indices.min() < 0 or indices.max() >= num_vectors):
            raise ValueError(f"topk_indices must lie in 0..{num_vectors - 1}")
        if self.topk > 1 and (indices.sort(dim=-1).values.diff(dim=-1) == 0).any():
            raise ValueError("topk_indices repeat a bank vector within one sub-vector")
        top_logits = torch.cat([torch.zeros(self.num_subvectors, 1, dtype=gaps.dtype), gaps], dim=-1)
        logits = torch.full_like(self.logits, float("-inf")).scatter(
            -1, indices.to(self.logits.device), top_logits.to(self.logits)
        )
        with torch.no_grad():
            copy_into(self.bank, bank)
            copy_into(self.logits, logits)
        self.inference_only = True
        self.set_active(False)

    def set_active(self, active: bool) -> None:
        """An adapter loaded from a top-k-only file stays frozen: its −inf logits cannot be trained."""
        super().set_active(active and not self.inference_only)
