"""Fixed-point encoding: round trips, range and finiteness checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import EncodingError, ParameterError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(hnp.arrays(np.float64, st.integers(0, 50), elements=finite), st.integers(0, 6))
def test_round_trip_is_within_half_a_unit_of_the_last_place(x: np.ndarray, n: int) -> None:
    enc = FixedPointEncoder(decimals=n)
    back = enc.decode(enc.encode(x))
    assert np.all(np.abs(back - x) <= 0.5 / 10**n + 1e-9 * np.abs(x))


@given(hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(-10**9, 10**9)),
       st.integers(0, 4))
def test_integers_on_the_grid_encode_exactly(m: np.ndarray, n: int) -> None:
    enc = FixedPointEncoder(decimals=n)
    assert np.array_equal(enc.encode(enc.decode(m)), m)


@given(hnp.arrays(np.float64, (5, 3), elements=finite),
       hnp.arrays(np.float64, (5, 3), elements=finite))
def test_encoding_is_additive_up_to_one_unit(a: np.ndarray, b: np.ndarray) -> None:
    enc = FixedPointEncoder(decimals=2)
    assert np.all(np.abs(enc.encode(a) + enc.encode(b) - enc.encode(a + b)) <= 1)


def test_default_scale_is_ten_to_the_two() -> None:
    assert FixedPointEncoder().scale == 100
    assert FixedPointEncoder().encode([12.345]).tolist() == [1234]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused_with_their_position(bad: float) -> None:
    with pytest.raises(EncodingError, match=r"NaN or infinite \(first at index \(1, 0\)\)"):
        FixedPointEncoder().encode(np.array([[1.0], [bad]]))


def test_values_beyond_the_plaintext_range_are_refused() -> None:
    enc = FixedPointEncoder(decimals=2, max_abs_int=10_000)
    assert enc.encode([100.0]).tolist() == [10_000]
    with pytest.raises(EncodingError, match=r"exceed the plaintext range \|x\| <= 100"):
        enc.encode([100.01])


@pytest.mark.parametrize("decimals", [-1, 13, 2.5, True])
def test_bad_decimals_are_refused(decimals: object) -> None:
    with pytest.raises(ParameterError):
        FixedPointEncoder(decimals=decimals)  # type: ignore[arg-type]
