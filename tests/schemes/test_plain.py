"""The plain aggregation's bytes: round trips and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import CiphertextError
from cipherseg.schemes.plain import PlainAggregation

ints = st.integers(-(2**62), 2**62)


@given(st.lists(ints, max_size=50))
def test_round_trip(values: list[int]) -> None:
    scheme = PlainAggregation()
    np.testing.assert_array_equal(scheme.load(scheme.encrypt(np.array(values, dtype=np.int64))),
                                  np.array(values, dtype=np.int64))


@given(st.lists(ints, min_size=1, max_size=20), st.data())
def test_truncated_or_flipped_bytes_are_refused(values: list[int], data: st.DataObject) -> None:
    scheme = PlainAggregation()
    blob = scheme.encrypt(np.array(values, dtype=np.int64))
    with pytest.raises(CiphertextError):
        scheme.load(blob[:data.draw(st.integers(0, len(blob) - 1))])
    flipped = bytearray(blob)
    flipped[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CiphertextError):
        scheme.load(bytes(flipped))


def test_a_size_that_does_not_match_the_values_is_refused() -> None:
    from cipherseg.schemes.plain import _WIRE

    forged = _WIRE.pack({"kind": "ciphertext", "size": 3}, [np.zeros(2, "<i8").tobytes()])
    with pytest.raises(CiphertextError, match="size does not match"):
        PlainAggregation().load(forged)
