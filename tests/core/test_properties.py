"""Property-based invariants: random small layouts (shapes, ranks, targets) × every projection."""

from __future__ import annotations

import pytest
import torch
from helpers import PROJECTION_CASES, perturb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lorazoo import AdapterConfig, attach, load_adapter, projection_names
from lorazoo.projections import get_projection_class, layout_rank
from lorazoo.targets import layout_from_model

WIDTHS = st.sampled_from([8, 16, 24, 32])


class Block(nn.Module):
    def __init__(self, widths: list[int]):
        super().__init__()
        self.up = nn.Linear(widths[0], widths[1])
        self.mid = nn.Linear(widths[1], widths[2])
        self.down = nn.Linear(widths[2], widths[0])

    def forward(self, x):
        return x + self.down(torch.tanh(self.mid(torch.tanh(self.up(x)))))


class Stack(nn.Module):
    """Blocks of identical shapes, so every module kind has one shape (as in transformers)."""

    def __init__(self, widths: list[int], depth: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(Block(widths) for _ in range(depth))
        self.head = nn.Linear(widths[0], 3)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


LAYOUTS = st.fixed_dictionaries(
    {
        "widths": st.lists(WIDTHS, min_size=3, max_size=3),
        "depth": st.integers(1, 3),
        "rank": st.integers(1, 4),
        "targets": st.sampled_from([["up"], ["mid", "down"], ["up", "mid", "down"], "all-linear", r".*\.(up|down)"]),
        "seed": st.integers(0, 2**16),
    }
)


def _kwargs(projection: str, rank: int, D: int) -> dict:
    kwargs = dict(PROJECTION_CASES[projection])
    if "d" in kwargs:
        kwargs["d"] = min(kwargs["d"], max(1, D // 2))
    if projection == "prolora":
        kwargs["unshared_rank"] = min(kwargs.get("unshared_rank", 1), rank)
    return kwargs


@pytest.mark.parametrize("projection", projection_names())
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(layout=LAYOUTS)
def test_invariants_hold_on_random_layouts(projection, layout, tmp_path_factory):
    def base():
        return Stack(layout["widths"], layout["depth"], seed=1).eval()

    D = layout_from_model(base(), layout["targets"], layout["rank"]).D
    cfg = AdapterConfig(
        projection=projection,
        rank=layout["rank"],
        target_modules=layout["targets"],
        seed=layout["seed"],
        projection_kwargs=_kwargs(projection, layout["rank"], D),
    )
    model = attach(base(), cfg)
    perturb(model, seed=layout["seed"])
    theta_D = model.projection()
    assert theta_D.shape == (model.layout.D,) and torch.isfinite(theta_D).all()
    rank_of = layout_rank(cfg)  # the configured rank, or a method's per-module factor rank (randlora)
    assert all(e.rank == rank_of(e.in_features, e.out_features) for e in model.layout)
    assert model.layout.D == sum(e.rank * (e.in_features + e.out_features) for e in model.layout)

    x = torch.randn(4, layout["widths"][0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        model.merge()
        torch.testing.assert_close(model(x), out, atol=1e-4, rtol=1e-4)
        model.unmerge()

    path = tmp_path_factory.mktemp("adapter")
    model.save_adapter(path)
    with torch.no_grad():
        assert torch.equal(load_adapter(base(), path)(x), out)

    if projection == "unilora":
        P = model.projection.matrix().to_dense()
        torch.testing.assert_close(P.T @ P, torch.eye(P.shape[1]), atol=1e-6, rtol=0)
        assert torch.equal((P != 0).sum(1), torch.ones(P.shape[0], dtype=torch.long))
    if get_projection_class(projection).is_linear and model.layout.D * model.projection.d <= 200_000:
        dense = model.projection.matrix()
        dense = dense.to_dense() if dense.is_sparse else dense
        torch.testing.assert_close(dense @ model.projection.theta_d(), theta_D.detach(), atol=1e-5, rtol=1e-5)
