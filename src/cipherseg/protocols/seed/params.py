"""Protocol 4.4's VHE parameters and the digit encoding of centroids both parties use."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError
from cipherseg.schemes.vhe import (
    VHEParams,
)

DEFAULT_CENTROID_BITS = 20


def digit_bits_for(n_samples: int, n_features: int) -> int:
    """Digit size b of the centroid split: weights ``d·(2^b − 1)`` stay within ``n`` (b ≥ 8).

    >>> digit_bits_for(100_000, 3)
    15
    """
    return max(8, (max(n_samples, 1) // max(n_features, 1)).bit_length() - 1)


def split_digits(mu: npt.NDArray[Any], bits: int) -> npt.NDArray[np.int64]:
    """Signed base-``2^bits`` digits of integers: ``mu = Σ_t 2^(bits·t)·out[t]``, |out| < 2^bits.

    >>> split_digits(np.array([[300, -5]]), 8).tolist()
    [[[44, -5]], [[1, 0]]]
    """
    flat = [int(v) for v in np.asarray(mu).reshape(-1)]
    top = max((abs(v).bit_length() for v in flat), default=0)
    n_digits = max(1, -(-top // bits))
    mask = (1 << bits) - 1
    out = np.array([[(1 if v >= 0 else -1) * ((abs(v) >> (bits * t)) & mask) for v in flat]
                    for t in range(n_digits)], dtype=np.int64)
    return out.reshape(n_digits, *np.asarray(mu).shape)


def seed_params(n_samples: int, n_features: int, max_abs: int, *, noise_bound: int = 1,
                secret_dim: int = 1, min_ciphertext_bits: int = 16) -> VHEParams:
    """The smallest VHE parameters the seed mode needs for this data.

    Budget: sums of up to ``n_samples`` fresh ciphertexts, and per-digit score combinations
    with weights ``Σ_f |μ̃_jf^(t)| ≤ d·(2^b − 1)`` of once-switched per-feature ciphertexts
    (``b = digit_bits_for(n, d)``).

    >>> p = seed_params(100_000, 3, 2047)
    >>> p.backend, p.ciphertext_bits
    ('uint64', 55)
    """
    coeff = n_features * ((1 << digit_bits_for(n_samples, n_features)) - 1)
    return VHEParams.for_workload(
        n_features, max(2, max_abs.bit_length() + 1), max_terms=max(n_samples, coeff),
        key_switches=1, noise_bound=noise_bound, secret_dim=secret_dim,
        min_ciphertext_bits=min_ciphertext_bits,
    )


def check_params(params: VHEParams, n: int, d: int, max_abs: int) -> None:
    need = seed_params(n, d, max_abs)
    if params.dim != d:
        raise ParameterError(f"params.dim={params.dim} but the data have {d} features")
    if params.max_plaintext < max_abs:
        raise ParameterError(f"the data need plaintext_bits >= {need.plaintext_bits}")
    if params.max_terms < need.max_terms or params.key_switches < 1:
        raise ParameterError(
            f"the seed mode needs max_terms >= {need.max_terms} (sums of {n} customers and "
            f"centroid digit weights) and key_switches >= 1; "
            "use cipherseg.protocols.seed.params.seed_params(...)"
        )


def round_centroids(centers: npt.NDArray[np.float64], p: int) -> npt.NDArray[Any]:
    scaled = np.rint(centers * float(2**p))
    if np.max(np.abs(scaled)) < 2.0**62:
        return scaled.astype(np.int64)
    return np.array([[int(v) for v in row] for row in scaled], dtype=object)


def recombine(digit_scores: npt.NDArray[Any], bits: int) -> npt.NDArray[Any]:
    """``Σ_t 2^(bits·t)·s[:, t, :]`` exactly (int64 when it fits, else Python ints)."""
    n_digits = digit_scores.shape[1]
    if digit_scores.dtype != object:
        peak = int(np.max(np.abs(digit_scores))) if digit_scores.size else 0
        if peak.bit_length() + bits * (n_digits - 1) + n_digits.bit_length() < 62:
            weights = np.array([1 << (bits * t) for t in range(n_digits)], dtype=np.int64)
            combined: npt.NDArray[Any] = np.einsum("ntk,t->nk", digit_scores.astype(np.int64),
                                                   weights)
            return combined
    out = np.zeros((digit_scores.shape[0], digit_scores.shape[2]), dtype=object)
    for t in range(n_digits):
        out = out + digit_scores[:, t, :].astype(object) * (1 << (bits * t))
    return out
