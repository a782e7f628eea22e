"""Randomness for RLWE: byte sources and the distributions the threshold scheme samples.

Two byte sources:

* :class:`SystemRandomSource` — the operating system's CSPRNG (``os.urandom``): every secret,
  error, encryption and smudging sample in production.
* :class:`SeededRandomSource` — SHAKE-256 as an extendable-output function over a seed and a
  domain-separation label: the *public* common reference polynomial every party expands from
  a shared seed, and reproducible tests. Never for secrets outside tests.

Distributions (all vectorised, no Python loop per coefficient):

* uniform residues modulo each prime (rejection sampling on masked 32-bit words);
* uniform ternary {-1, 0, 1} (rejection sampling on bytes, 255 = 3 · 85);
* the rounded Gaussian of the HE standard, σ = 3.2 truncated at ⌊6σ⌋ = 19, by inversion of a
  64-bit cumulative distribution table;
* uniform wide integers in [-2^b, 2^b) reduced modulo each prime (the smudging noise, b ≈ 94).

>>> src = SeededRandomSource(b"example seed 0123456789", b"doc")
>>> sorted(set(sample_ternary(src, (1000,)).tolist()))
[-1, 0, 1]
>>> int(abs(sample_gaussian(src, (1000,), 3.2, 19)).max()) <= 19
True
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Protocol

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError


class RandomSource(Protocol):
    """Something that returns uniformly random bytes."""

    def random_bytes(self, n: int) -> bytes:
        """``n`` uniformly random bytes."""
        ...


class SystemRandomSource:
    """The operating system CSPRNG (``os.urandom``).

    >>> len(SystemRandomSource().random_bytes(16))
    16
    """

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)


class SeededRandomSource:
    """Deterministic bytes: SHAKE-256(label ‖ seed ‖ counter), block after block.

    Parameters
    ----------
    seed:
        At least 16 bytes.
    label:
        Domain separation: the same seed under two labels gives unrelated streams.

    Examples
    --------
    >>> a = SeededRandomSource(b"0123456789abcdef", b"x").random_bytes(8)
    >>> a == SeededRandomSource(b"0123456789abcdef", b"x").random_bytes(8)
    True
    """

    def __init__(self, seed: bytes, label: bytes) -> None:
        if len(seed) < 16:
            raise ParameterError(f"a seed needs at least 16 bytes, got {len(seed)}")
        self._prefix = len(label).to_bytes(2, "little") + label + seed
        self._counter = 0

    def random_bytes(self, n: int) -> bytes:
        block = hashlib.shake_256(self._prefix + self._counter.to_bytes(8, "little"))
        self._counter += 1
        return block.digest(n)


def _words32(source: RandomSource, count: int) -> npt.NDArray[np.uint64]:
    return np.frombuffer(source.random_bytes(4 * count), dtype="<u4").astype(np.uint64)


def sample_uniform_mod(
    source: RandomSource, moduli: tuple[int, ...], shape: tuple[int, ...]
) -> npt.NDArray[np.uint64]:
    """Uniform residues: an array of shape ``(*shape[:-1], K, shape[-1])``, row k mod p_k."""
    count = int(np.prod(shape))
    out = np.empty((len(moduli), count), dtype=np.uint64)
    for row, p in enumerate(moduli):
        mask = np.uint64((1 << p.bit_length()) - 1)
        filled = 0
        while filled < count:
            need = count - filled
            words = _words32(source, need + need // 8 + 16) & mask
            good = words[words < np.uint64(p)][:need]
            out[row, filled:filled + good.size] = good
            filled += good.size
    arranged = out.reshape(len(moduli), *shape)
    return np.ascontiguousarray(np.moveaxis(arranged, 0, -2))


def sample_ternary(source: RandomSource, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Uniform on {-1, 0, 1}."""
    count = int(np.prod(shape))
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        need = count - filled
        raw = np.frombuffer(source.random_bytes(need + need // 32 + 16), dtype=np.uint8)
        good = raw[raw < 255][:need]
        out[filled:filled + good.size] = good.astype(np.int64) % 3 - 1
        filled += good.size
    return out.reshape(shape)


def gaussian_table(sigma: float, bound: int) -> npt.NDArray[np.uint64]:
    """Cumulative table of |X| for the discrete Gaussian of width σ truncated to [-bound, bound]:
    entry k is ⌊2^63 · P(|X| <= k)⌋."""
    if sigma <= 0 or bound < 1:
        raise ParameterError(f"need sigma > 0 and bound >= 1, got {sigma}, {bound}")
    rho = [math.exp(-(k * k) / (2.0 * sigma * sigma)) for k in range(bound + 1)]
    total = rho[0] + 2.0 * sum(rho[1:])
    cdf = 0.0
    table = []
    for k in range(bound + 1):
        cdf += (rho[k] if k == 0 else 2.0 * rho[k]) / total
        table.append(min(int(cdf * 2**63), 2**63))
    table[-1] = 2**63
    return np.array(table, dtype=np.uint64)


def sample_gaussian(
    source: RandomSource, shape: tuple[int, ...], sigma: float, bound: int,
    table: npt.NDArray[np.uint64] | None = None,
) -> npt.NDArray[np.int64]:
    """Discrete Gaussian of width σ, truncated at ``bound``, by table inversion (64-bit)."""
    cdt = gaussian_table(sigma, bound) if table is None else table
    count = int(np.prod(shape))
    raw = np.frombuffer(source.random_bytes(8 * count), dtype="<u8")
    magnitude = np.searchsorted(cdt, raw >> np.uint64(1), side="right").astype(np.int64)
    sign = np.where(raw & np.uint64(1), -1, 1)
    return (magnitude * sign).reshape(shape)


def sample_wide_uniform_mod(
    source: RandomSource, bits: int, moduli: tuple[int, ...], shape: tuple[int, ...]
) -> npt.NDArray[np.uint64]:
    """Integers uniform on [-2^bits, 2^bits), returned as residues of shape
    ``(*shape[:-1], K, shape[-1])`` (the values never exist as Python integers)."""
    if bits < 1:
        raise ParameterError(f"bits must be >= 1, got {bits}")
    count = int(np.prod(shape))
    limbs = (bits + 1 + 31) // 32
    words = _words32(source, limbs * count).reshape(limbs, count)
    top_bits = bits + 1 - 32 * (limbs - 1)
    words[-1] &= np.uint64((1 << top_bits) - 1)
    p = np.array(moduli, dtype=np.uint64)[:, None]  # all primes at once: (K, 1)
    radix = np.array([(1 << 32) % q for q in moduli], dtype=np.uint64)[:, None]
    out = np.zeros((len(moduli), count), dtype=np.uint64)
    for i in range(limbs - 1, -1, -1):  # Horner in base 2^32; every product is below 2^63
        out = (out * radix + words[i] % p) % p
    offset = np.array([(1 << bits) % q for q in moduli], dtype=np.uint64)[:, None]
    out = (out + (p - offset)) % p
    arranged = out.reshape(len(moduli), *shape)
    return np.ascontiguousarray(np.moveaxis(arranged, 0, -2))
