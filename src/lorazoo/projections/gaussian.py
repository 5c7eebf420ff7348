"""Dense Gaussian random projection: θ_D = P θ_d with P_ij ~ N(0, 1/D), never stored whole.

The intrinsic-dimension line of work (Li et al. 2018, "Measuring the Intrinsic Dimension of Objective
Landscapes"; Aghajanyan et al. 2021) trains a small θ_d through a dense random P; Uni-LoRA (Li et al.
2025) uses it as an ablation of its sparse isometry. With variance 1/D every column has expected
squared norm 1, so P is an isometry in expectation, like unilora's P.

P has D·d entries (3.4e9 for RoBERTa-base GLUE), so rows are regenerated in chunks from the
counter-based generator (entry (i, j) is counter i·d + j of one stream) inside a custom autograd
function: forward Σ_chunks P_c θ, backward Σ_chunks P_cᵀ g. The chunks are generated with torch integer
ops on θ's device (``rng.normal_torch``): nothing crosses the host–device bus and at most one chunk of P
exists at a time, in forward and in backward. When D·d ≤ ``cache_max_elements`` the whole matrix is
generated once and kept (non-persistent; never saved).

Cost: every step regenerates P twice (forward and backward), 2·D·d normals; each is three SplitMix64
hashes (~36 int64 ops) plus a Box–Muller transform in float64. On a CPU the integer half runs as one
compiled loop (``rng.normal_torch(fused=True)``, the same bits); with log1p and cos that is ~10 ns a value
on one core (eagerly ~25), and it is what limits this ablation on a CPU: at d = 23,040 a step costs
2·D·d·10 ns whatever the model. A GPU runs the same integer ops in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lorazoo.config import AdapterConfig
from lorazoo.layout import Layout
from lorazoo.projections import rng
from lorazoo.projections.base import PaperSettings, Projection, register_projection
from lorazoo.projections.options import option

_STREAM = "gaussian/P"
# values per generated chunk: on a CPU large enough that the per-call cost (~0.1 ms: keys, guards of the
# compiled generator) is small against the ~3 ms of generation (measured: 17 ns a value at 2^16, 13 at 2^18),
# ~8 MB of temporaries; on an accelerator large enough that its elementwise kernels are not launch-bound
_AUTO_CHUNK_ELEMENTS = {"cpu": 1 << 18}
_AUTO_CHUNK_ELEMENTS_DEVICE = 1 << 24


@dataclass(frozen=True)
class GaussianOptions:
    d: int = option(
        23040, positive=True, high="D", high_name="D, the number of LoRA factor entries"
    )  # unilora's GLUE d
    # θ_d ~ U(±0.02) as unilora/PEFT (θ_d = 0 would make every A_l = B_l = 0 and BA has zero gradient there)
    init_range: float = option(0.02, positive=True)
    chunk_rows: int = option(0, low=0)  # 0 = auto (about 256K entries per chunk on a CPU, 16M on a GPU)
    cache_max_elements: int = option(1 << 24, low=0)  # keep P whole when D·d is at most this


@register_projection("gaussian")
class GaussianProjection(Projection):
    paper = PaperSettings(
        rank=4,
        lr=5e-3,
        source="Uni-LoRA's GLUE setting (an ablation in arXiv:2506.00799): r = 4; θ lr 5e-3 from "
        "KaiyangLi1992/Uni-LoRA@3387a6e:NLU/NLU/scripts_unilora_qv/roberta_base_sst2.sh (same scale: unit-norm columns in expectation)",
    )
    Options = GaussianOptions
    is_linear = True
    tiny_case = {"d": 48}
    cached_matrix: torch.Tensor | None

    def __init__(self, layout: Layout, config: AdapterConfig):
        super().__init__(layout, config)
        d = self.opts.d
        self.theta = self.small_uniform_theta(d)
        # filled lazily on first use, so building the projection (e.g. for counting) allocates only θ_d
        self.register_buffer("cached_matrix", None, persistent=False)

    @property
    def cached(self) -> bool:
        return self.D * self.theta.numel() <= self.opts.cache_max_elements

    def rows(
        self, start: int, stop: int, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Rows [start, stop) of P, identical however the rows are chunked."""
        d = self.theta.numel()
        values = rng.normal_torch(
            self.config.seed,
            _STREAM,
            (stop - start) * d,
            start=start * d,
            device=device or self.theta.device,
            fused=True,
        )
        return values.div_(math.sqrt(self.D)).view(stop - start, d).to(dtype or self.theta.dtype)

    @property
    def chunk_rows(self) -> int:
        """Rows per generated chunk: the option, else sized for θ's device."""
        elements = _AUTO_CHUNK_ELEMENTS.get(self.theta.device.type, _AUTO_CHUNK_ELEMENTS_DEVICE)
        return self.opts.chunk_rows or max(1, elements // self.theta.numel())

    def structure_tensors(self) -> dict[str, torch.Tensor]:
        """P is streamed, never stored: its first and last rows stand for it in adapter checksums."""
        k = min(4, self.D)
        return {"P_first_rows": self.rows(0, k), "P_last_rows": self.rows(self.D - k, self.D)}

    def row_chunks(self):
        """(start, stop) of every chunk of ``chunk_rows`` rows."""
        step = self.chunk_rows
        return [(s, min(s + step, self.D)) for s in range(0, self.D, step)]

    def forward(self) -> torch.Tensor:
        if self.cached:
            return self._full_matrix() @ self.theta
        return _ChunkedMatVec.apply(self.theta, self)

    def _full_matrix(self) -> torch.Tensor:
        p = self.cached_matrix
        if p is None or p.dtype != self.theta.dtype or p.device != self.theta.device:
            p = self.cached_matrix = self._dense()
        return p

    def _dense(self) -> torch.Tensor:
        p = torch.empty(self.D, self.theta.numel(), dtype=self.theta.dtype, device=self.theta.device)
        for start, stop in self.row_chunks():  # chunk by chunk: the float64 temporaries stay small
            p[start:stop] = self.rows(start, stop)
        return p

    def matrix(self) -> torch.Tensor:
        """The dense D × d matrix (for checks on small layouts: it allocates D·d values)."""
        return self._full_matrix().clone() if self.cached else self._dense()


class _ChunkedMatVec(torch.autograd.Function):
    """y = P θ and θ̄ = Pᵀ ȳ with P regenerated chunk by chunk (never held whole)."""

    @staticmethod
    def forward(ctx, theta: torch.Tensor, projection: GaussianProjection) -> torch.Tensor:
        ctx.projection = projection
        out = theta.new_empty(projection.D)
        for start, stop in projection.row_chunks():
            out[start:stop] = projection.rows(start, stop, theta.dtype, theta.device) @ theta
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        projection = ctx.projection
        grad = grad_out.new_zeros(projection.theta.numel())
        for start, stop in projection.row_chunks():
            grad.addmv_(projection.rows(start, stop, grad_out.dtype, grad_out.device).t(), grad_out[start:stop])
        return grad, None
