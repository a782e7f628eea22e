"""The plain scheme's bytes: round trips and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import CiphertextError
from cipherseg.schemes.plain import PlainScheme

floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(st.lists(floats, max_size=50))
def test_round_trip(values: list[float]) -> None:
    scheme = PlainScheme()
    data = scheme.ciphertext_to_bytes(scheme.encrypt(values))
    np.testing.assert_array_equal(scheme.ciphertext_from_bytes(data), np.array(values))


@given(st.lists(floats, min_size=1, max_size=20), st.data())
def test_truncated_or_flipped_bytes_are_refused(values: list[float],
                                                data: st.DataObject) -> None:
    scheme = PlainScheme()
    blob = scheme.ciphertext_to_bytes(scheme.encrypt(values))
    with pytest.raises(CiphertextError):
        scheme.ciphertext_from_bytes(blob[:data.draw(st.integers(0, len(blob) - 1))])
    flipped = bytearray(blob)
    flipped[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CiphertextError):
        scheme.ciphertext_from_bytes(bytes(flipped))


def test_a_size_that_does_not_match_the_values_is_refused() -> None:
    from cipherseg.schemes.plain import _WIRE

    forged = _WIRE.pack({"kind": "ciphertext", "size": 3}, [np.zeros(2).tobytes()])
    with pytest.raises(CiphertextError, match="size does not match"):
        PlainScheme().ciphertext_from_bytes(forged)
