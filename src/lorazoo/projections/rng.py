"""Counter-based random numbers that do not depend on torch's RNG, numpy's bit generators or the machine.

Each value is a SplitMix64 hash of (seed, purpose, position), so the same (seed, layout) gives the same
indices and matrices everywhere, and any slice of a huge random matrix can be generated on its own (the
Gaussian projection uses that to stream its D × d matrix in chunks).

The arithmetic is written once, in torch integer ops, so a chunk can be generated on the device that
uses it (no host round trip). torch has no uint64: the 64-bit words live in int64 tensors, where add and
multiply wrap modulo 2^64 exactly like unsigned arithmetic (two's complement), XOR is bitwise, and the
one unsigned op that differs — the logical right shift — is an arithmetic shift with the sign-extended
high bits masked off. The numpy functions below are thin views of the torch ones on the CPU, so the two
are the same numbers by construction (tests pin the integer stream against a plain numpy uint64 SplitMix64).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

# Bump whenever any regenerated structure (indices, frozen matrices, streamed Gaussian/Fastfood blocks) would
# come out differently for the same (seed, layout): run fingerprints and adapter checksums record it.
GENERATOR_VERSION = 1

_U64 = 1 << 64


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    value &= _U64 - 1
    return value - _U64 if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 words: arithmetic shift, then clear the copied sign bits."""
    return torch.bitwise_right_shift(z, bits).bitwise_and_((1 << (64 - bits)) - 1)


def _splitmix64_(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser of z + golden ratio, in place on an int64 tensor (returns it)."""
    z.add_(_GOLDEN)
    z.bitwise_xor_(_shr(z, 30)).mul_(_M1)
    z.bitwise_xor_(_shr(z, 27)).mul_(_M2)
    return z.bitwise_xor_(_shr(z, 31))


def stream_key(seed: int, purpose: str) -> int:
    """A 64-bit key (as a signed int) for one independent stream: the seed mixed with a hash of the purpose."""
    mixed = int(_splitmix64_(torch.tensor([_signed(seed)], dtype=torch.int64))[0])
    return _signed(mixed ^ zlib.crc32(purpose.encode()))


def _counter_hash(count: int, start: int, device: torch.device | str | None) -> torch.Tensor:
    """splitmix64(start + i): the stream-independent half of ``random_bits`` (shared by several streams)."""
    if start < 0 or start + count > 1 << 63:
        raise ValueError(f"counter range [{start}, {start + count}) is outside 0..2^63")
    return _splitmix64_(torch.arange(start, start + count, dtype=torch.int64, device=device))


def _bits_from(hashed: torch.Tensor, seed: int, purpose: str) -> torch.Tensor:
    return _splitmix64_(hashed.clone().add_(stream_key(seed, purpose)))


def random_bits_torch(
    seed: int, purpose: str, count: int, start: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The 64-bit words of positions [start, start + count) of one stream, as int64 (same bits as uint64)."""
    return _bits_from(_counter_hash(count, start, device), seed, purpose)


def _unit(bits: torch.Tensor) -> torch.Tensor:
    """float64 in [0, 1) from the top 53 bits (exact: every value is k · 2^-53)."""
    return _shr(bits, 11).to(torch.float64).mul_(2.0**-53)


def uniform_torch(
    seed: int,
    purpose: str,
    count: int,
    low: float = 0.0,
    high: float = 1.0,
    start: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """float64 values in [low, high), 53 random bits each: low + (high − low) · unit."""
    return _unit(random_bits_torch(seed, purpose, count, start, device)).mul_(high - low).add_(low)


def normal_torch(
    seed: int, purpose: str, count: int, start: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Standard normal float64 values by Box–Muller (cos branch); value i depends only on (seed, purpose, start + i).

    Integer stream and uniforms are exact on every device; log1p and cos are the device's float64 libm, so
    values agree with the CPU ones to the last float64 ulp (CPU: identical).
    """
    hashed = _counter_hash(count, start, device)  # shared by the u1 and u2 streams
    u1 = _unit(_bits_from(hashed, seed, purpose + "/u1"))
    u2 = _unit(_bits_from(hashed, seed, purpose + "/u2"))
    del hashed
    radius = u1.neg_().log1p_().mul_(-2.0).sqrt_()
    return radius.mul_(u2.mul_(2.0 * math.pi).cos_())


# ----------------------------------------------------------------------------- numpy views (CPU)
def random_bits(seed: int, purpose: str, count: int, start: int = 0) -> np.ndarray:
    return random_bits_torch(seed, purpose, count, start).numpy().view(np.uint64)


def uniform(seed: int, purpose: str, count: int, low: float = 0.0, high: float = 1.0, start: int = 0) -> np.ndarray:
    """float64 values in [low, high), 53 random bits each."""
    return uniform_torch(seed, purpose, count, low, high, start).numpy()


def normal(seed: int, purpose: str, count: int, start: int = 0) -> np.ndarray:
    """Standard normal float64 values by Box–Muller; value i depends only on (seed, purpose, start + i)."""
    return normal_torch(seed, purpose, count, start).numpy()


def permutation(seed: int, purpose: str, count: int) -> np.ndarray:
    """A uniformly random permutation of range(count) as int64: the order of hashed counters (as uint64)."""
    return np.argsort(random_bits(seed, purpose, count), kind="stable").astype(np.int64)


def rademacher(seed: int, purpose: str, count: int) -> np.ndarray:
    return np.where(random_bits(seed, purpose, count) >> np.uint64(63), 1.0, -1.0)


def as_tensor(values: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype)
