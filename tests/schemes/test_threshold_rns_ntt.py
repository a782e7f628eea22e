"""RNS ring arithmetic: the NTT product against schoolbook negacyclic convolution."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import ParameterError
from cipherseg.schemes.rns_ntt import RnsRing, is_prime, ntt_primes


def schoolbook(a: list[int], b: list[int]) -> list[int]:
    n = len(a)
    out = [0] * n
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if i + j < n:
                out[i + j] += x * y
            else:
                out[i + j - n] -= x * y
    return out


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([8, 16, 64]), st.integers(1, 3), st.data())
def test_ntt_product_is_negacyclic_convolution(n: int, k: int, data: st.DataObject) -> None:
    ring = RnsRing(n, ntt_primes(n, k))
    half = ring.q // (2 * n * 2**8)
    a = data.draw(st.lists(st.integers(-half, half), min_size=n, max_size=n))
    b = data.draw(st.lists(st.integers(-(2**8), 2**8), min_size=n, max_size=n))
    got = ring.to_int(ring.multiply(ring.from_int(np.array(a, dtype=object)),
                                    ring.from_int(np.array(b, dtype=object))))
    assert got.tolist() == schoolbook(a, b)


@pytest.mark.parametrize("n", [16, 1024, 8192])
def test_forward_inverse_round_trip_and_batches(n: int) -> None:
    ring = RnsRing(n, ntt_primes(n, 3))
    rng = np.random.default_rng(n)
    x = ring.from_int(rng.integers(-(2**40), 2**40, size=(2, n)))
    assert x.shape == (2, 3, n)
    fx = ring.forward(x)
    assert (ring.inverse(fx) == x).all()
    assert (ring.forward(x[1]) == fx[1]).all()
    assert (fx < np.array(ring.moduli, dtype=np.uint64)[:, None]).all()


@pytest.mark.parametrize("length", [1, 16, 64])
def test_small_head_product_matches_full_product(length: int) -> None:
    n = 8192
    ring = RnsRing(n, ntt_primes(n, 5))
    rng = np.random.default_rng(length)
    a = ring.from_int(rng.integers(-(2**60), 2**60, size=n))
    for bound in (1, 19):
        y = rng.integers(-bound, bound + 1, size=n)
        full = ring.multiply(a, ring.from_int(y))
        assert (ring.multiply_small_head(a, y, length) == full[:, :length]).all()


def test_small_head_refuses_inexact_inputs() -> None:
    ring = RnsRing(8192, ntt_primes(8192, 1))
    with pytest.raises(ParameterError, match="2\\^53"):
        ring.multiply_small_head(ring.from_int(np.zeros(8192, dtype=np.int64)),
                                 np.full(8192, 2**20), 4)


def test_crt_round_trip_of_centred_integers() -> None:
    ring = RnsRing(16, ntt_primes(16, 5))
    values = np.array([0, 1, -1, ring.q // 2, -(ring.q // 2) + 1, 12345678901234567890] + [0] * 10,
                      dtype=object)
    assert ring.to_int(ring.from_int(values)).tolist() == values.tolist()


def test_primes_and_bad_moduli() -> None:
    primes = ntt_primes(8192, 5)
    assert all(is_prime(p) and p < 2**31 and p % 16384 == 1 for p in primes)
    assert not is_prime(2147352577 * 3) and not is_prime(1) and is_prime(2)
    with pytest.raises(ParameterError, match="NTT-friendly"):
        RnsRing(8192, (2147352577 + 2,))
    with pytest.raises(ParameterError, match="distinct"):
        RnsRing(8192, (primes[0], primes[0]))
    with pytest.raises(ParameterError, match="power of two"):
        RnsRing(1000, primes)


@pytest.mark.parametrize("n", [16, 4096, 8192])
def test_float_fft_product_with_ternary_polynomials_is_exact(n: int) -> None:
    ring = RnsRing(n, ntt_primes(n, 5))
    rng = np.random.default_rng(n + 1)
    a = ring.from_int(rng.integers(-(2**62), 2**62, size=n))
    a[:, :3] = np.array(ring.moduli, dtype=np.uint64)[:, None] - 1  # extreme residues
    worst = np.array([p // 2 for p in ring.moduli], dtype=np.uint64)[:, None] * np.ones(
        n, dtype=np.uint64)  # the largest balanced residue everywhere: the round-off worst case
    for poly in (a, worst):
        prepared = ring.fft_prepare(poly)
        y = rng.integers(-1, 2, size=(2, n))
        y[0, :5] = 1
        y[1] = 1  # all ones, with the constant polynomial: every partial sum is maximal
        e = rng.integers(-19, 20, size=(2, n))
        got = ring.fft_multiply_small(prepared, y, addend=e)
        assert got.shape == (2, 5, n)
        for i in range(2):
            expected = ring.add(ring.multiply(poly, ring.from_int(y[i])), ring.from_int(e[i]))
            assert (got[i] == expected).all()
    with pytest.raises(ParameterError, match="<= 1"):
        ring.fft_multiply_small(ring.fft_prepare(a), np.full(n, 2))
