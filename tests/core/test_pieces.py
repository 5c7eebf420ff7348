"""θ_D handed to the layers as segments (``Projection.pieces``): the same numbers and gradients as ``forward``;
the shared-factor projections hand over ``ScaledRows`` that nothing multiplies out during training."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECTION_CASES

from lorazoo import AdapterConfig, Layout, projection_names
from lorazoo.projections import build_projection, layout_rank
from lorazoo.projections.factors import RowScale, ScaledRows, dense

# two kinds, shapes that differ inside a kind's neighbours, layers interleaved (q, v, q, v, o)
SHAPES = [("l0.q", 16, 16), ("l0.v", 16, 8), ("l1.q", 16, 16), ("l1.v", 16, 8), ("l1.o", 8, 16)]


def build(name: str, seed: int = 0):
    config = AdapterConfig(projection=name, rank=2, seed=seed, projection_kwargs=dict(PROJECTION_CASES[name]))
    # at rank 2 (RandLoRA: its per-module factor ranks)
    projection = build_projection(Layout.from_shapes(SHAPES, layout_rank(config)), config)
    with torch.no_grad():  # off the init (ΔW = 0 zeroes some gradients), reproducibly
        gen = torch.Generator().manual_seed(seed + 1)
        if projection.reads_base_weights:  # a weight-aware method reads base weights (out × in) first
            projection.init_from_base(
                (e.name, torch.randn(e.out_features, e.in_features, generator=gen)) for e in projection.layout
            )
        for p in projection.trainable_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return projection


@pytest.mark.parametrize("name", projection_names())
def test_pieces_are_theta_D_segments_with_the_same_gradients(name):
    projection = build(name)
    layout = projection.layout
    g = torch.randn(layout.D, generator=torch.Generator().manual_seed(7))
    pieces = [dense(p).reshape(-1) for p in projection.pieces()]
    assert [p.numel() for p in pieces] == layout.segment_sizes
    theta_D = projection()
    assert torch.equal(torch.cat([p.detach() for p in pieces]), theta_D.detach())
    params = projection.trainable_parameters()
    trained = [(p, gp) for p, gp in zip(pieces, g.split(layout.segment_sizes)) if p.requires_grad]  # not frozen bases
    via_pieces = torch.autograd.grad([p for p, _ in trained], params, [gp for _, gp in trained])
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
def test_shared_factor_pieces_are_scaled_views_of_the_projections_own_tensors(name):
    """Every A_l, B_l is diag(s) M with s and M views of the projection's parameters and buffers: building the
    pieces allocates nothing and records no autograd node."""
    projection = build(name)
    own = {t.untyped_storage().data_ptr() for t in [*projection.parameters(), *projection.buffers()]}
    saved: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        pieces = projection.pieces()
    assert not saved
    assert all(isinstance(p, ScaledRows) for p in pieces)
    assert all(t.untyped_storage().data_ptr() in own for p in pieces for t in (p.scale, p.matrix))


@pytest.mark.parametrize("options", [{}, {"padding_idx": 1}, {"scale_grad_by_freq": True}])
def test_scaled_rows_act_in_layers_as_their_dense_factor(options):
    """``linear`` and ``embedding`` of a ScaledRows give the dense factor's outputs and gradients (embedding
    options that act on the table's gradient included)."""
    import torch.nn.functional as F

    from lorazoo.projections import factors

    gen = torch.Generator().manual_seed(3)
    scale = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    matrix = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    h = torch.randn(2, 5, 6, dtype=torch.float64, generator=gen)
    indices = torch.tensor([[1, 2, 1, 5], [0, 1, 3, 3]])
    g_linear, g_embed = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)

    def outputs_and_grads(factor):
        out = (factors.linear(h, factor), factors.embedding(indices, factor, **options))
        return [*out, *torch.autograd.grad(out, (scale, matrix), (g_linear, g_embed))]

    dense = RowScale.apply(scale, matrix)
    expected = [F.linear(h, dense), F.embedding(indices, dense.T, **options)]
    expected += torch.autograd.grad(expected, (scale, matrix), (g_linear, g_embed))
    for got, want in zip(outputs_and_grads(ScaledRows(scale, matrix)), expected):
        torch.testing.assert_close(got, want)
    assert factors.scaled(ScaledRows(scale, matrix), 0.5).dense().detach().equal(0.5 * dense.detach())


def test_scaled_rows_are_applied_as_parts_only_when_that_keeps_less(monkeypatch):
    """(h Mᵀ) ⊙ s keeps T × n numbers for backward, diag(s) M keeps n × m: a call with T ≥ m rows forms the
    product (one RowScale), one with fewer rows never does; both give the dense factor's result."""
    import torch.nn.functional as F

    from lorazoo.projections import factors

    gen = torch.Generator().manual_seed(5)
    factor = ScaledRows(torch.randn(3, generator=gen, requires_grad=True), torch.randn(3, 8, generator=gen))
    formed: list[int] = []
    original = factors.RowScale.apply
    monkeypatch.setattr(factors.RowScale, "apply", lambda *a: formed.append(1) or original(*a))
    for rows, forms in ((7, False), (8, True), (20, True)):
        formed.clear()
        h = torch.randn(rows, 8, generator=gen)
        out = factors.linear(h, factor)
        assert bool(formed) == forms, rows
        torch.testing.assert_close(out, F.linear(h, original(factor.scale, factor.matrix)))
