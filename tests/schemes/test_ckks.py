"""CKKS: parameters, custody split, arithmetic against numpy, serialisation and bad bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cipherseg.errors import CiphertextError, KeyCustodyError, ParameterError
from cipherseg.schemes.ckks import CkksParams, CkksPublicContext, pack_context_bytes
from cipherseg.schemes.ckks_keys import CkksSecretContext

TOL = 1e-5  # absolute, on values of magnitude <= 10 with a 2^40 scale


@pytest.fixture(scope="module")
def owner() -> CkksSecretContext:
    return CkksSecretContext.generate(CkksParams.for_depth(1))


@pytest.fixture(scope="module")
def centre(owner: CkksSecretContext) -> CkksPublicContext:
    return CkksPublicContext.from_bytes(owner.public_bytes())


vectors = hnp.arrays(np.float64, st.integers(1, 64),
                     elements=st.floats(-10, 10, allow_nan=False, allow_infinity=False))


def test_depth_one_chain_is_within_the_128_bit_bound() -> None:
    p = CkksParams.for_depth(1)
    assert p.coeff_mod_bit_sizes == (60, 40, 60)
    assert sum(p.coeff_mod_bit_sizes) <= 218


@pytest.mark.parametrize(
    ("n", "bits", "message"),
    [
        (8192, (60, 40, 40, 40, 40, 60), "exceeds the HE-standard 128-bit bound 218"),
        (4096, (60, 40, 60), "exceeds the HE-standard 128-bit bound 109"),
        (3000, (60, 40, 60), "poly_modulus_degree must be one of"),
        (8192, (60, 30, 60), "middle primes must have scale_bits=40"),
        (8192, (40, 40, 60), "first prime must be larger than the scale"),
        (8192, (60,), "at least two primes"),
    ],
)
def test_insecure_or_unusable_parameters_are_refused(n: int, bits: tuple[int, ...],
                                                     message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        CkksParams(n, bits, 40)


def test_public_context_cannot_decrypt(owner: CkksSecretContext,
                                       centre: CkksPublicContext) -> None:
    assert owner.is_private() and not centre.is_private()
    assert not hasattr(centre, "decrypt")
    assert centre.fingerprint == owner.fingerprint


def test_centre_refuses_context_bytes_that_carry_a_secret_key(owner: CkksSecretContext) -> None:
    from cipherseg.schemes.ckks import unpack_context_bytes

    fields = unpack_context_bytes(owner.public_bytes())
    fields["secret_key"] = b"anything"
    with pytest.raises(KeyCustodyError, match="include a secret key"):
        CkksPublicContext.from_bytes(pack_context_bytes(fields))


@settings(max_examples=20, deadline=None)
@given(vectors)
def test_round_trip(owner: CkksSecretContext, x: np.ndarray) -> None:
    ct = owner.ciphertext_from_bytes(owner.encrypt_to_bytes(x))
    np.testing.assert_allclose(owner.decrypt(ct, x.size), x, atol=TOL)


@settings(max_examples=15, deadline=None)
@given(vectors, st.data())
def test_centre_arithmetic_matches_numpy(owner: CkksSecretContext, centre: CkksPublicContext,
                                         x: np.ndarray, data: st.DataObject) -> None:
    y = data.draw(hnp.arrays(np.float64, x.size, elements=st.floats(-10, 10)))
    a = centre.ciphertext_from_bytes(owner.encrypt_to_bytes(x))
    b = centre.ciphertext_from_bytes(owner.encrypt_to_bytes(y))
    back = owner.ciphertext_from_bytes
    n = x.size
    total = centre.ciphertext_to_bytes(centre.add(a, b))
    np.testing.assert_allclose(owner.decrypt(back(total), n), x + y, atol=TOL)
    prod = centre.relinearize(centre.rescale(centre.multiply(a, b)))
    np.testing.assert_allclose(owner.decrypt(back(centre.ciphertext_to_bytes(prod)), n), x * y,
                               atol=1e-4)
    scaled = centre.multiply_integer(a, 7)
    np.testing.assert_allclose(owner.decrypt(back(centre.ciphertext_to_bytes(scaled)), n),
                               7 * x, atol=TOL * 7)


def test_public_key_encryption_at_the_centre_decrypts_at_the_owner(
        owner: CkksSecretContext, centre: CkksPublicContext) -> None:
    ct = centre.encrypt_public([1.25, -3.5])
    np.testing.assert_allclose(owner.decrypt(ct, 2), [1.25, -3.5], atol=TOL)


def test_seeded_uploads_are_about_half_a_full_ciphertext(owner: CkksSecretContext,
                                                         centre: CkksPublicContext) -> None:
    seeded = owner.encrypt_to_bytes(np.ones(4096))
    full = centre.ciphertext_to_bytes(centre.ciphertext_from_bytes(seeded))
    assert len(seeded) < 0.6 * len(full)


def test_truncated_ciphertext_is_refused(owner: CkksSecretContext,
                                         centre: CkksPublicContext) -> None:
    data = owner.encrypt_to_bytes([1.0])
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(CiphertextError, match=r"truncated|corrupted"):
            centre.ciphertext_from_bytes(data[:cut])


@pytest.fixture(scope="module")
def upload(owner: CkksSecretContext) -> bytes:
    return owner.encrypt_to_bytes([1.0, 2.0])


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(upload: bytes, centre: CkksPublicContext,
                                     data: st.DataObject) -> None:
    blob = bytearray(upload)
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CiphertextError):
        centre.ciphertext_from_bytes(bytes(blob))


def test_ciphertext_from_another_key_set_is_refused(owner: CkksSecretContext) -> None:
    other = CkksSecretContext.generate(CkksParams.for_depth(1))
    with pytest.raises(CiphertextError, match="another key set"):
        owner.ciphertext_from_bytes(other.encrypt_to_bytes([1.0]))


def test_corrupted_context_bytes_are_refused(owner: CkksSecretContext) -> None:
    data = bytearray(owner.public_bytes())
    data[100] ^= 1
    with pytest.raises(CiphertextError, match="checksum"):
        CkksPublicContext.from_bytes(bytes(data))
    with pytest.raises(CiphertextError):
        CkksPublicContext.from_bytes(b"short")


def test_repr_of_the_secret_context_shows_no_key_material(owner: CkksSecretContext) -> None:
    text = repr(owner)
    assert "fingerprint" in text and "secret" not in text.lower().replace("secretcontext", "")
