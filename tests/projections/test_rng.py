"""The torch port of the counter-based generator: the same 64-bit stream as a plain numpy uint64 SplitMix64,
the same uniforms and normals as the numpy API, generated wherever the tensor lives."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from lorazoo import AdapterConfig, Layout
from lorazoo.projections import build_projection, rng


def reference_splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 (Steele, Lea & Flood 2014; Vigna's splitmix64.c) written directly in numpy uint64."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def reference_bits(seed: int, purpose: str, count: int, start: int) -> np.ndarray:
    key = reference_splitmix64(np.array([seed], dtype=np.uint64))[0] ^ np.uint64(zlib.crc32(purpose.encode()))
    with np.errstate(over="ignore"):
        return reference_splitmix64(reference_splitmix64(np.arange(start, start + count, dtype=np.uint64)) + key)


@pytest.mark.parametrize("seed,start", [(0, 0), (1234, 0), (2**64 - 1, 10**6), (7, 2**62)])
def test_integer_stream_is_unsigned_splitmix64(seed, start):
    """Every word (high bit set or not) equals the uint64 reference: wraparound add/mul and logical shifts."""
    ours = rng.random_bits_torch(seed, "purpose", 4096, start=start)
    assert ours.dtype == torch.int64
    expected = reference_bits(seed, "purpose", 4096, start)
    np.testing.assert_array_equal(ours.numpy().view(np.uint64), expected)
    assert (ours < 0).any() and (ours > 0).any()  # both halves of the unsigned range were exercised
    np.testing.assert_array_equal(rng.random_bits(seed, "purpose", 4096, start=start), expected)


def test_uniforms_are_the_top_53_bits_exactly():
    bits = reference_bits(3, "u", 5000, 17)
    unit = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
    np.testing.assert_array_equal(rng.uniform_torch(3, "u", 5000, start=17).numpy(), unit)
    np.testing.assert_array_equal(rng.uniform(3, "u", 5000, -0.5, 2.0, start=17), -0.5 + 2.5 * unit)


def test_normals_are_box_muller_of_the_two_streams():
    u1 = rng.uniform(5, "n/u1", 20000, start=99)
    u2 = rng.uniform(5, "n/u2", 20000, start=99)
    expected = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)  # numpy's libm
    ours = rng.normal_torch(5, "n", 20000, start=99).numpy()
    ulps = np.abs(ours - expected) / np.spacing(np.abs(expected))
    assert ulps.max() <= 4  # only the libraries' log1p/cos roundings differ
    np.testing.assert_array_equal(ours.astype(np.float32), expected.astype(np.float32))
    np.testing.assert_array_equal(rng.normal(5, "n", 20000, start=99), ours)  # numpy API = torch, bit for bit


def test_any_slice_of_a_stream_is_generated_on_its_own():
    whole = rng.normal_torch(0, "s", 1000)
    assert torch.equal(
        torch.cat(
            [rng.normal_torch(0, "s", 300, start=s) for s in range(0, 900, 300)]
            + [rng.normal_torch(0, "s", 100, start=900)]
        ),
        whole,
    )


def test_counter_range_is_checked():
    with pytest.raises(ValueError, match="outside"):
        rng.random_bits_torch(0, "x", 10, start=2**63 - 5)


def test_generation_follows_the_requested_device():
    """The 'meta' device has no data: generating there proves no host (numpy) step is involved."""
    assert rng.normal_torch(0, "g", 10, device="meta").device.type == "meta"
    layout = Layout.from_shapes([("q", 8, 8)], rank=2)
    p = build_projection(layout, AdapterConfig(projection="gaussian", rank=2, projection_kwargs={"d": 4}))
    assert p.rows(0, 3, device=torch.device("meta")).shape == (3, 4)


def test_gaussian_streams_chunks_in_forward_and_backward(monkeypatch):
    """Forward and backward each regenerate P chunk by chunk; no request ever covers the whole D × d."""
    layout = Layout.from_shapes([(f"l{i}.q", 16, 16) for i in range(4)], rank=2)  # D = 256
    p = build_projection(
        layout,
        AdapterConfig(
            projection="gaussian", rank=2, projection_kwargs={"d": 40, "cache_max_elements": 0, "chunk_rows": 32}
        ),
    )
    dense = p.matrix()
    sizes: list[int] = []
    original = type(p).rows

    def recording(self, start, stop, dtype=None, device=None):
        sizes.append(stop - start)
        return original(self, start, stop, dtype, device)

    monkeypatch.setattr(type(p), "rows", recording)
    out = p()
    assert sum(sizes) == layout.D and max(sizes) == 32
    g = torch.randn(layout.D, generator=torch.Generator().manual_seed(1))
    out.backward(g)
    assert sum(sizes) == 2 * layout.D and max(sizes) == 32
    torch.testing.assert_close(out.detach(), dense @ p.theta.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(p.theta.grad, dense.T @ g, rtol=1e-5, atol=1e-6)
    assert not math.isnan(float(p.theta.grad.sum()))


@pytest.mark.parametrize(
    "seed,start,count",
    [
        (0, 0, rng.FUSE_MIN_VALUES),
        (7, 2**62, rng.FUSE_MIN_VALUES + 4097),
        (2**64 - 1, 123_457, 3 * rng.FUSE_MIN_VALUES),
    ],
)
def test_fused_generation_gives_the_same_bits(seed, start, count):
    """The compiled integer half (CPU, large requests) changes speed only: every float64 equals the eager one."""
    eager = rng.normal_torch(seed, "fused", count, start=start)
    fused = rng.normal_torch(seed, "fused", count, start=start, fused=True)
    assert torch.equal(fused, eager)


def test_fused_generation_falls_back_to_eager_when_it_cannot_compile(monkeypatch):
    """No C++ compiler (or any inductor failure): one warning, then the eager values, never different ones."""

    def broken_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found")

        return compiled

    monkeypatch.setattr(rng, "_fused", None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    count = rng.FUSE_MIN_VALUES
    with pytest.warns(RuntimeWarning, match="could not compile the random-number generator.*no C\\+\\+ compiler"):
        values = rng.normal_torch(1, "fallback", count, fused=True)
    assert torch.equal(values, rng.normal_torch(1, "fallback", count))
    assert rng._fused is rng._box_muller_uniforms  # decided once: no retry (and no warning) per chunk


def test_streamed_gaussian_chunks_use_the_fused_generator_and_the_documented_values():
    """A chunk big enough to be fused (the paper setting's case) holds the same entries as the eager stream."""
    d = 512
    layout = Layout.from_shapes([(f"l{i}.q", 64, 64) for i in range(2)], rank=4)
    p = build_projection(
        layout, AdapterConfig(projection="gaussian", rank=4, projection_kwargs={"d": d, "cache_max_elements": 0})
    )
    rows = p.chunk_rows
    assert rows * d >= rng.FUSE_MIN_VALUES
    expected = rng.normal_torch(0, "gaussian/P", rows * d) / math.sqrt(layout.D)
    assert torch.equal(p.rows(0, rows), expected.view(rows, d).float())
