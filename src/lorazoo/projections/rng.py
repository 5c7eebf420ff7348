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

import functools
import math
import warnings
import zlib
from collections.abc import Callable
from typing import Any

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


@functools.lru_cache(maxsize=4096)
def stream_key(seed: int, purpose: str) -> int:
    """A 64-bit key (as a signed int) for one independent stream: the seed mixed with a hash of the purpose.

    Cached: a streamed matrix asks for the same keys once per chunk, and each costs ~10 tensor ops."""
    mixed = int(_splitmix64_(torch.tensor([_signed(seed)], dtype=torch.int64))[0])
    return _signed(mixed ^ zlib.crc32(purpose.encode()))


def _check_counter_range(start: int, count: int) -> None:
    if start < 0 or start + count > 1 << 63:
        raise ValueError(f"counter range [{start}, {start + count}) is outside 0..2^63")


def _hashed_counters(start: int | torch.Tensor, count: int, device: torch.device | str | None) -> torch.Tensor:
    """splitmix64(start + i): the stream-independent half of every stream (shared by several streams).

    ``start`` may be a 0-d tensor, so that one compiled version serves every chunk offset."""
    return _splitmix64_(torch.arange(count, dtype=torch.int64, device=device).add_(start))


def _keyed_(hashed: torch.Tensor, key: int | torch.Tensor) -> torch.Tensor:
    """splitmix64(hashed + key), in place: one stream's words from the shared counter hash."""
    return _splitmix64_(hashed.add_(key))


def _counter_hash(count: int, start: int, device: torch.device | str | None) -> torch.Tensor:
    _check_counter_range(start, count)
    return _hashed_counters(start, count, device)


def _bits_from(hashed: torch.Tensor, seed: int, purpose: str) -> torch.Tensor:
    return _keyed_(hashed.clone(), stream_key(seed, purpose))


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
    seed: int,
    purpose: str,
    count: int,
    start: int = 0,
    device: torch.device | str | None = None,
    *,
    fused: bool = False,
) -> torch.Tensor:
    """Standard normal float64 values by Box–Muller (cos branch); value i depends only on (seed, purpose, start + i).

    Integer stream and uniforms are exact on every device; log1p and cos are the device's float64 libm, so
    values agree with the CPU ones to the last float64 ulp (CPU: identical). ``fused=True`` lets a large CPU
    request run its integer half as one compiled loop (same bits, ~2–3× faster; see ``_fused_uniforms``).
    """
    _check_counter_range(start, count)
    device = torch.device(device) if device is not None else torch.device("cpu")
    args = (
        torch.tensor(start, dtype=torch.int64, device=device),
        torch.tensor(stream_key(seed, purpose + "/u1"), dtype=torch.int64, device=device),
        torch.tensor(stream_key(seed, purpose + "/u2"), dtype=torch.int64, device=device),
        count,
    )
    uniforms = _box_muller_uniforms
    if fused and device.type == "cpu" and count >= FUSE_MIN_VALUES:
        uniforms = _fused_uniforms()
    u1, angle = uniforms(*args)
    radius = u1.neg_().log1p_().mul_(-2.0).sqrt_()
    return radius.mul_(angle.cos_())


def _box_muller_uniforms(
    start: torch.Tensor, key_u1: torch.Tensor, key_u2: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """u1 and the angle 2π·u2 of positions [start, start + count): the exact integer half of Box–Muller.

    The counter hash is shared by the u1 and u2 streams. Tensor arguments (not Python ints) so one compiled
    version serves every seed and chunk offset; the arithmetic is the one ``random_bits_torch`` uses.
    """
    hashed = _hashed_counters(start, count, start.device)
    u1 = _unit(_keyed_(hashed.clone(), key_u1))
    angle = _unit(_keyed_(hashed, key_u2)).mul_(2.0 * math.pi)
    return u1, angle


# Below this many values a request runs eagerly: compiling costs seconds once per process and size.
FUSE_MIN_VALUES = 1 << 15
_fused: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None


def _fused_uniforms() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``_box_muller_uniforms`` compiled by inductor into one CPU loop, else the eager function.

    Eagerly, each of its ~40 integer ops is a pass over memory (~25 ns a value on one core); fused, the words
    stay in registers. Only the integer half is compiled: it is exact, so the bits cannot change, whereas
    inductor's vectorised log1p/cos round differently from ATen's in the last float64 ulp. Where inductor
    cannot compile (no C++ compiler), the eager function is used from then on, with one warning: the values
    are the same, only slower.
    """
    global _fused
    if _fused is None:
        compiled = torch.compile(_box_muller_uniforms, dynamic=None)

        def fused_or_eager(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
            global _fused
            try:
                return compiled(*args)
            except Exception as error:  # noqa: BLE001 - any compile failure: identical eager values
                warnings.warn(
                    f"lorazoo: could not compile the random-number generator ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); generating eagerly (same values, slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _fused = _box_muller_uniforms
                return _box_muller_uniforms(*args)

        _fused = fused_or_eager
    return _fused


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
