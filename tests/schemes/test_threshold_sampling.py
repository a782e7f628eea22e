"""RLWE samplers: support, moments and reproducibility (fixed seeds, so no flaky tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cipherseg.errors import ParameterError
from cipherseg.schemes.rlwe_sampling import (
    SeededRandomSource,
    SystemRandomSource,
    gaussian_table,
    sample_gaussian,
    sample_ternary,
    sample_uniform_mod,
    sample_wide_uniform_mod,
)

SEED = b"cipherseg-tests-0123456789"
PRIMES = (2147352577, 2147205121)


def src(label: bytes = b"t") -> SeededRandomSource:
    return SeededRandomSource(SEED, label)


def test_seeded_source_is_deterministic_and_domain_separated() -> None:
    assert src(b"a").random_bytes(64) == src(b"a").random_bytes(64)
    assert src(b"a").random_bytes(64) != src(b"b").random_bytes(64)
    s = src()
    assert s.random_bytes(32) != s.random_bytes(32)  # the stream advances
    with pytest.raises(ParameterError, match="16 bytes"):
        SeededRandomSource(b"short", b"x")
    assert len(SystemRandomSource().random_bytes(33)) == 33


def test_ternary_is_uniform_on_three_values() -> None:
    x = sample_ternary(src(), (60000,))
    counts = np.array([(x == v).sum() for v in (-1, 0, 1)])
    assert counts.sum() == x.size
    assert stats.chisquare(counts).pvalue > 1e-3


def test_gaussian_has_the_standard_width_and_truncation() -> None:
    x = sample_gaussian(src(), (200000,), 3.2, 19)
    assert int(np.abs(x).max()) <= 19
    assert abs(x.mean()) < 0.05
    assert abs(x.std() - 3.2) < 0.05
    table = gaussian_table(3.2, 19)
    assert table[-1] == 2**63 and (np.diff(table.astype(np.float64)) >= 0).all()


def test_uniform_mod_is_reduced_and_spread() -> None:
    r = sample_uniform_mod(src(), PRIMES, (3, 4096))
    assert r.shape == (3, 2, 4096)
    for row, p in enumerate(PRIMES):
        v = r[:, row, :].ravel().astype(np.float64) / p
        assert (v < 1).all()
        assert stats.kstest(v, "uniform").pvalue > 1e-3


def test_wide_uniform_residues_match_python_integers() -> None:
    bits = 94
    got = sample_wide_uniform_mod(src(b"w"), bits, PRIMES, (50,))
    # Rebuild the integers from the same stream and reduce them with Python arithmetic.
    limbs = math.ceil((bits + 1) / 32)
    raw = np.frombuffer(src(b"w").random_bytes(4 * limbs * 50), dtype="<u4").reshape(limbs, 50)
    for j in range(50):
        value = sum(int(raw[i, j]) << (32 * i) for i in range(limbs))
        value &= (1 << (bits + 1)) - 1
        value -= 1 << bits
        assert -(2**bits) <= value < 2**bits
        assert [int(got[row, j]) for row in range(2)] == [value % p for p in PRIMES]
