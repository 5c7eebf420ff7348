"""gaussian and fastfood: linear projections θ_D = P θ_d checked against independent dense formulas."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import model_inputs, tiny_bert

from lorazoo import AdapterConfig, ConfigError, Layout, attach
from lorazoo.projections import build_projection, rng
from lorazoo.projections.fastfood import fastfood_structures, walsh_hadamard
from lorazoo.projections.gaussian import _ChunkedMatVec

# D = 2·(32+32) + 2·(32+48) + 2·(32+32) = 416: not a multiple of the fastfood block (64)
SMALL = Layout.from_shapes([("l0.q", 32, 32), ("l0.v", 32, 48), ("l1.q", 32, 32)], rank=2)
# D = 512 = 8 blocks of 64
EVEN = Layout.from_shapes([("l0.q", 64, 64), ("l1.q", 64, 64)], rank=2)


def make(name: str, layout: Layout = SMALL, seed: int = 0, **kwargs):
    kwargs.setdefault("d", 48)
    return build_projection(
        layout, AdapterConfig(projection=name, rank=layout[0].rank, seed=seed, projection_kwargs=kwargs)
    )


# ----------------------------------------------------------------------------- gaussian
def test_gaussian_entries_follow_the_documented_stream():
    """P_ij is counter i·d + j of the N(0,1) stream, divided by √D (an independent re-derivation)."""
    p = make("gaussian")
    P, D, d = p.matrix().double(), SMALL.D, 48
    for i, j in [(0, 0), (0, 47), (5, 3), (415, 47), (200, 17)]:
        expected = rng.normal(0, "gaussian/P", 1, start=i * d + j)[0] / math.sqrt(D)
        assert P[i, j].item() == pytest.approx(expected, rel=1e-6)
    assert P.var().item() * D == pytest.approx(1.0, rel=0.05)  # N(0, 1/D): columns of unit norm on average
    assert abs(P.mean().item()) < 3 / math.sqrt(D * d * D)


@pytest.mark.parametrize("cache", [1 << 24, 0])
def test_gaussian_theta_equals_matrix_times_theta(cache):
    p = make("gaussian", cache_max_elements=cache)
    assert p.cached == (cache > 0)
    torch.testing.assert_close(p(), p.matrix() @ p.theta.detach(), rtol=1e-5, atol=1e-7)


def test_gaussian_chunking_does_not_change_the_result():
    reference = make("gaussian")().detach()
    for chunk_rows in (1, 7, 100, 10_000):
        out = make("gaussian", cache_max_elements=0, chunk_rows=chunk_rows)().detach()
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-7)
    p = make("gaussian", chunk_rows=7)
    torch.testing.assert_close(torch.cat([p.rows(s, e) for s, e in p.row_chunks()]), p.rows(0, SMALL.D), rtol=0, atol=0)


@pytest.mark.parametrize("cache", [1 << 24, 0])
def test_gaussian_gradient_is_p_transpose_g(cache):
    p = make("gaussian", cache_max_elements=cache, chunk_rows=50)
    g = torch.randn(SMALL.D, generator=torch.Generator().manual_seed(0))
    (p() * g).sum().backward()
    torch.testing.assert_close(p.theta.grad, p.matrix().T @ g, rtol=1e-5, atol=1e-6)


def test_gaussian_chunked_function_passes_gradcheck():
    p = make(
        "gaussian", layout=Layout.from_shapes([("q", 4, 4)], rank=1), d=3, cache_max_elements=0, chunk_rows=3
    ).double()
    theta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _ChunkedMatVec.apply(t, p), (theta,))


def test_gaussian_golden_checksum_and_seeds():
    p = make("gaussian")
    block = p.rows(5, 9, dtype=torch.float64).numpy()  # rounded: robust to last-ulp libm differences
    assert (
        hashlib.sha256(np.round(block, 6).tobytes()).hexdigest()
        == "e3d2008093c9bed324423274f0d900a0cd962c3e8961ae90ee9b11badba58851"
    )
    assert torch.equal(make("gaussian").matrix(), p.matrix()) and torch.equal(make("gaussian").theta, p.theta)
    other = make("gaussian", seed=1)
    assert not torch.allclose(other.matrix(), p.matrix()) and not torch.allclose(other.theta, p.theta)


def test_gaussian_construction_allocates_only_theta():
    big = Layout.from_shapes([(f"l{i}.q", 4096, 4096) for i in range(32)], rank=4)  # D·d ≈ 5.5e11
    p = make("gaussian", layout=big, d=524288)
    assert p.cached_matrix is None and not p.cached
    assert sum(t.numel() for t in p.state_dict(keep_vars=True).values()) == 524288
    assert p.d == p.stored_numel() == 524288 and p.D == big.D


def test_gaussian_rejects_bad_options():
    with pytest.raises(ConfigError, match="d=417"):
        make("gaussian", d=417)
    with pytest.raises(ConfigError, match="chunk_rows=-1"):
        make("gaussian", chunk_rows=-1)
    with pytest.raises(ConfigError, match="unknown option"):
        make("gaussian", block=3)


# ----------------------------------------------------------------------------- fastfood
@pytest.mark.parametrize("length", [1, 2, 8, 64])
def test_walsh_hadamard_matches_scipy(length):
    x = torch.randn(3, 2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    H = torch.from_numpy(scipy.linalg.hadamard(length).astype(np.float64))
    torch.testing.assert_close(walsh_hadamard(x), x @ H)
    with pytest.raises(ValueError, match="power-of-two"):
        walsh_hadamard(torch.zeros(12))


def dense_fastfood(seed: int, D: int, d: int) -> np.ndarray:
    """P from explicit matrices: rows of stacked H·diag(G_k)·Π_k·H·diag(B_k), first d columns, cut to D."""
    L = 1 << (d - 1).bit_length()
    signs, perm, gauss = fastfood_structures(seed, D, L)
    H = scipy.linalg.hadamard(L).astype(np.float64)
    blocks = []
    for k in range(signs.shape[0]):
        Pi = np.zeros((L, L))
        Pi[np.arange(L), perm[k * L : (k + 1) * L] - k * L] = 1.0  # (Π x)_i = x_{π(i)}
        blocks.append(H @ np.diag(gauss[k]) @ Pi @ H @ np.diag(signs[k]))
    return np.concatenate(blocks)[:D, :d]


@pytest.mark.parametrize("layout", [SMALL, EVEN], ids=["ragged", "even"])
def test_fastfood_is_the_documented_linear_map(layout):
    p = make("fastfood", layout=layout)
    P = p.matrix()
    torch.testing.assert_close(P.double(), torch.from_numpy(dense_fastfood(0, layout.D, 48)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p(), P @ p.theta.detach(), rtol=1e-5, atol=1e-6)
    g = torch.randn(layout.D, generator=torch.Generator().manual_seed(1))
    (p() * g).sum().backward()
    torch.testing.assert_close(p.theta.grad, P.T @ g, rtol=1e-5, atol=1e-6)


def test_fastfood_columns_have_unit_norm_and_are_nearly_orthogonal():
    """Each block's columns have squared norm exactly L‖G_k‖² before scaling, so after dividing by
    √(‖G_k‖² D) the columns have squared norm exactly 1 when L divides D (≈ 1 otherwise); distinct
    columns are orthogonal in expectation (mean squared inner product well under 3/D)."""
    gram = make("fastfood", layout=EVEN).matrix().double().T @ make("fastfood", layout=EVEN).matrix().double()
    torch.testing.assert_close(torch.diag(gram), torch.ones(48, dtype=torch.float64))
    off = gram - torch.diag(torch.diag(gram))
    assert (off**2).sum().item() / (48 * 47) < 3 / EVEN.D
    ragged = make("fastfood").matrix().double()
    norms = (ragged**2).sum(0)
    assert torch.all((norms - 1).abs() < 0.2) and abs(norms.mean().item() - 1) < 0.05


def test_fastfood_golden_checksum_and_seeds():
    signs, perm, gauss = fastfood_structures(0, SMALL.D, 64)
    assert signs.shape == (7, 64) and sorted(perm[64:128] - 64) == list(range(64))
    digest = hashlib.sha256()
    for part in (signs.astype(np.int8), perm.astype(np.int64), np.round(gauss, 6)):
        digest.update(part.tobytes())
    assert digest.hexdigest() == "c5593e7ea149d42aaaa9b27c31e9aa49daa3be6a546c7f5b7241f83d84fc7ae9"
    assert torch.equal(make("fastfood").matrix(), make("fastfood").matrix())
    assert not torch.allclose(make("fastfood", seed=1).matrix(), make("fastfood").matrix())


def test_fastfood_construction_is_lazy_and_cheap():
    big = Layout.from_shapes([(f"l{i}.q", 4096, 4096) for i in range(32)], rank=4)
    p = make("fastfood", layout=big, d=524288)
    assert p.signs is None and p.perm is None and p.gauss is None
    assert p.block == 524288 and p.num_blocks == math.ceil(big.D / 524288)
    assert p.d == p.stored_numel() == 524288


# ----------------------------------------------------------------------------- in a model
@pytest.mark.parametrize("name", ["gaussian", "fastfood"])
def test_projection_drives_the_model_and_trains(name):
    torch.manual_seed(0)
    model = attach(
        tiny_bert(),
        AdapterConfig(projection=name, rank=2, target_modules=["query", "value"], projection_kwargs={"d": 48}),
    )
    inputs = model_inputs("bert")
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    with model.disabled():
        reference = model(**inputs).logits
    out = model(**inputs).logits
    assert (out - reference).abs().max() > 0  # θ_d ~ U(±0.02) gives a small ΔW ≠ 0 (as unilora)
    out.square().sum().backward()
    grad = model.projection.theta.grad
    assert grad is not None and grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        n for n, p in model.named_parameters() if p.grad is not None
    ]
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert model.num_parameters()["trainable"] == 48
