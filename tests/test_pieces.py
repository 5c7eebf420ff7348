"""θ_D handed to the layers as segments (``Projection.pieces``): the same numbers and gradients as ``forward``,
and for the shared-factor projections no θ_D-sized tensor is created by autograd."""

from __future__ import annotations

import pytest
import torch
from conftest import PROJECTION_CASES

from lorazoo import AdapterConfig, Layout, projection_names
from lorazoo.projections import build_projection
from lorazoo.projections.sharing import RowScale

# two kinds, shapes that differ inside a kind's neighbours, layers interleaved (q, v, q, v, o)
LAYOUT = Layout.from_shapes(
    [("l0.q", 16, 16), ("l0.v", 16, 8), ("l1.q", 16, 16), ("l1.v", 16, 8), ("l1.o", 8, 16)], rank=2
)


def build(name: str, seed: int = 0):
    projection = build_projection(
        LAYOUT, AdapterConfig(projection=name, rank=2, seed=seed, projection_kwargs=dict(PROJECTION_CASES[name]))
    )
    with torch.no_grad():  # off the init (ΔW = 0 zeroes some gradients), reproducibly
        gen = torch.Generator().manual_seed(seed + 1)
        for p in projection.trainable_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return projection


@pytest.mark.parametrize("name", projection_names())
def test_pieces_are_theta_D_segments_with_the_same_gradients(name):
    projection = build(name)
    g = torch.randn(LAYOUT.D, generator=torch.Generator().manual_seed(7))
    pieces = projection.pieces()
    assert [p.numel() for p in pieces] == LAYOUT.segment_sizes
    theta_D = projection()
    assert torch.equal(torch.cat([p.detach() for p in pieces]), theta_D.detach())
    params = projection.trainable_parameters()
    via_pieces = torch.autograd.grad(pieces, params, g.split(LAYOUT.segment_sizes))
    via_forward = torch.autograd.grad(theta_D, params, g)
    for a, b in zip(via_pieces, via_forward):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_row_scale_gradients():
    scale = torch.randn(3, dtype=torch.float64, requires_grad=True)
    matrix = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(RowScale.apply, (scale, matrix))
    assert torch.autograd.gradgradcheck(RowScale.apply, (scale, matrix))
    frozen = torch.randn(3, 5, dtype=torch.float64)[:, :4]  # a non-contiguous slice, as VeRA's A_sh[:, :h]
    assert torch.autograd.gradcheck(lambda s: RowScale.apply(s, frozen), (scale,))


@pytest.mark.parametrize("name", ["vera", "tied"])
def test_shared_factor_pieces_keep_no_theta_D_sized_tensors(name):
    """Saved for backward: only the scales and the shared matrices (no product, no concatenation); each
    backward node maps one layer's factor, so factor gradients are reduced as soon as that layer is done."""
    projection = build(name)
    own = {t.untyped_storage().data_ptr() for t in [*projection.parameters(), *projection.buffers()]}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pieces = projection.pieces()
    assert saved and all(t.untyped_storage().data_ptr() in own for t in saved)
    assert all(type(p.grad_fn).__name__ in {"ViewBackward0", "UnsafeViewBackward0"} for p in pieces)
    assert {type(p.grad_fn.next_functions[0][0]).__name__ for p in pieces} == {"RowScaleBackward"}
