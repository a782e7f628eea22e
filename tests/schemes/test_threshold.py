"""Threshold scheme: exact sums for 2..7 parties, what n-1 partial decryptions reveal,
refused shares and parameters, serialisation of every object, the aggregation interface."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from cipherseg.errors import (
    CiphertextError,
    KeyCustodyError,
    ParameterError,
    ProtocolError,
    ValidationError,
)
from cipherseg.schemes.base import AggregationScheme
from cipherseg.schemes.plain import PlainAggregation
from cipherseg.schemes.rlwe_sampling import SeededRandomSource
from cipherseg.schemes.rns_ntt import ntt_primes
from cipherseg.schemes.threshold import (
    Ciphertext,
    CommonReference,
    JointPublicKey,
    PartialDecryption,
    PublicShare,
    ThresholdAggregation,
    ThresholdParams,
    combine,
    encrypt,
    fuse,
    joint_public_key,
    new_crs,
    pack,
)
from cipherseg.schemes.threshold_keys import KeyShare

PARAMS = ThresholdParams()
SEED = b"cipherseg threshold tests seed!!"


def rng(label: str) -> SeededRandomSource:
    return SeededRandomSource(SEED, label.encode())


@pytest.fixture(scope="module")
def crs() -> CommonReference:
    return new_crs(PARAMS, SEED)


@pytest.fixture(scope="module")
def shares(crs: CommonReference) -> list[KeyShare]:
    return [KeyShare.generate(PARAMS, crs, party_id=10 + i, rng=rng(f"key{i}")) for i in range(7)]


def key_for(crs: CommonReference, shares: list[KeyShare], n: int) -> JointPublicKey:
    return joint_public_key(PARAMS, crs, [s.public_share for s in shares[:n]])


# ---------------------------------------------------------------- correctness
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_n_parties_decrypt_the_sum_of_their_vectors_exactly(
    n: int, crs: CommonReference, shares: list[KeyShare]
) -> None:
    pk = key_for(crs, shares, n)
    gen = np.random.default_rng(n)
    # Each party's vector uses the full range left for an n-term sum in [-2^41, 2^41).
    bound = (2**41 - 1) // n
    vectors = [gen.integers(-bound, bound + 1, size=40) for _ in range(n)]
    vectors[0][:2] = [bound, -bound]
    total = sum(encrypt(pk, v) for v in vectors)
    assert isinstance(total, Ciphertext) and total.summands == n
    partials = [s.partial_decrypt(total) for s in shares[:n]]
    got = fuse(total, reversed(partials))  # order of arrival does not matter
    np.testing.assert_array_equal(got, np.sum(vectors, axis=0))


def test_sums_up_to_2_40_with_negative_values(crs: CommonReference, shares: list[KeyShare]) -> None:
    pk = key_for(crs, shares, 7)
    parts = [np.array([2**40 // 7, -(2**40) // 7, 3, -3], dtype=np.int64)] * 7
    total = sum(encrypt(pk, p) for p in parts)
    got = fuse(total, [s.partial_decrypt(total) for s in shares])
    np.testing.assert_array_equal(got, 7 * parts[0])
    assert abs(int(got[0])) <= 2**40


def test_long_vectors_span_several_ring_elements(crs: CommonReference,
                                                 shares: list[KeyShare]) -> None:
    pk = key_for(crs, shares, 3)
    length = PARAMS.poly_degree + 77  # two blocks, full-transform path
    gen = np.random.default_rng(5)
    a, b = gen.integers(-(2**39), 2**39, size=(2, length))
    ct = encrypt(pk, a) + encrypt(pk, b)
    assert ct.blocks == 2
    np.testing.assert_array_equal(fuse(ct, [s.partial_decrypt(ct) for s in shares[:3]]), a + b)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=hnp.arrays(np.int64, st.integers(1, 80), elements=st.integers(-(2**40), 2**40)))
def test_encrypt_fuse_round_trip_property(values: np.ndarray, crs: CommonReference,
                                          shares: list[KeyShare]) -> None:
    pk = key_for(crs, shares, 2)
    ct = Ciphertext.from_bytes(encrypt(pk, values).to_bytes(), pk)
    partials = [PartialDecryption.from_bytes(s.partial_decrypt(ct).to_bytes(), pk)
                for s in shares[:2]]
    np.testing.assert_array_equal(fuse(ct, partials), values)


def test_a_smaller_ring_works_when_its_budget_allows() -> None:
    small = ThresholdParams(poly_degree=4096, moduli=ntt_primes(4096, 3), plain_modulus=2**16,
                            max_parties=2, max_summands=1)
    assert small.log_q <= 109 and small.security_level == 128
    crs = new_crs(small, SEED)
    a, b = (KeyShare.generate(small, crs, party_id=i) for i in (1, 2))
    pk = joint_public_key(small, crs, [a.public_share, b.public_share])
    ct = encrypt(pk, [-32768, 32767, 5])
    assert fuse(ct, [a.partial_decrypt(ct), b.partial_decrypt(ct)]).tolist() == [-32768, 32767, 5]


# ---------------------------------------------------------------- what n-1 partials reveal
def test_any_n_minus_1_partials_are_statistically_unrelated_to_the_plaintext(
    crs: CommonReference, shares: list[KeyShare]
) -> None:
    n, trials_per_missing = 3, 60
    pk = key_for(crs, shares, n)
    t = PARAMS.plain_modulus
    # Structured plaintext spread over the whole range: any leak would correlate with it.
    plain = np.arange(-8, 8, dtype=np.int64) * (2**37) + 12345
    seen, truth = [], []
    for missing in range(n):
        for trial in range(trials_per_missing):
            ct = encrypt(pk, plain, rng=rng(f"enc{missing}-{trial}"))
            hs = [s.partial_decrypt(ct, rng=rng(f"pd{missing}-{trial}-{i}")).h
                  for i, s in enumerate(shares[:n])]
            if trial == 0:  # control: with every share the plaintext comes out exactly
                np.testing.assert_array_equal(combine(ct, hs)[0], plain)
            values, residual = combine(ct, hs[:missing] + hs[missing + 1:])
            # The fusion noise check flags a decryption missing a share.
            assert np.all(np.abs(residual) > PARAMS.decode_residual_bound)
            seen.append(values)
            truth.append(plain)
    v = np.concatenate(seen).astype(np.float64)
    m = np.concatenate(truth).astype(np.float64)
    r, p_corr = stats.pearsonr(v, m)
    assert abs(r) < 0.1 and p_corr > 1e-4, (r, p_corr)
    # Uniform over the plaintext space: chi-square on 16 equal bins of [-t/2, t/2).
    bins = ((v + t / 2) * 16 // t).astype(int)
    counts = np.bincount(bins, minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-4
    # Not even the sign of each value leaks: agreement with the plaintext's sign is ~1/2.
    agree = np.mean(np.sign(v) == np.sign(m))
    assert abs(agree - 0.5) < 0.06


# ---------------------------------------------------------------- refused shares
def test_duplicated_missing_and_unknown_partials_are_refused(
    crs: CommonReference, shares: list[KeyShare]
) -> None:
    pk = key_for(crs, shares, 3)
    ct = encrypt(pk, [1, 2, 3])
    parts = [s.partial_decrypt(ct) for s in shares[:3]]
    with pytest.raises(ProtocolError, match="duplicated partial decryption from party \\[10\\]"):
        fuse(ct, [*parts, parts[0]])
    with pytest.raises(ProtocolError, match="missing partial decryption from party \\[11\\]"):
        fuse(ct, [parts[0], parts[2]])
    with pytest.raises(KeyCustodyError, match="not part of the joint key"):
        shares[5].partial_decrypt(ct)
    stranger = PartialDecryption(99, pk.fingerprint, ct.digest, parts[0].h)
    with pytest.raises(ProtocolError, match="not part of the joint key"):
        fuse(ct, [*parts, stranger])


def test_partials_of_another_ciphertext_or_key_are_refused(
    crs: CommonReference, shares: list[KeyShare]
) -> None:
    pk = key_for(crs, shares, 2)
    other_pk = joint_public_key(PARAMS, crs, [s.public_share for s in shares[2:4]])
    ct, ct2 = encrypt(pk, [1, 2]), encrypt(pk, [3, 4])
    mixed = [shares[0].partial_decrypt(ct), shares[1].partial_decrypt(ct2)]
    with pytest.raises(ProtocolError, match="another ciphertext"):
        fuse(ct, mixed)
    foreign = shares[2].partial_decrypt(encrypt(other_pk, [1, 2]))
    with pytest.raises(CiphertextError, match="another joint public key"):
        PartialDecryption.from_bytes(foreign.to_bytes(), pk)
    with pytest.raises(CiphertextError, match="another joint public key"):
        Ciphertext.from_bytes(encrypt(other_pk, [1]).to_bytes(), pk)
    with pytest.raises(CiphertextError, match="different joint keys"):
        _ = ct + encrypt(other_pk, [1, 2])


def test_tampered_partials_and_ciphertexts_are_detected(
    crs: CommonReference, shares: list[KeyShare]
) -> None:
    pk = key_for(crs, shares, 3)
    ct = encrypt(pk, np.arange(16))
    parts = [s.partial_decrypt(ct) for s in shares[:3]]
    # A flipped bit on the wire: the envelope checksum catches it.
    data = bytearray(parts[1].to_bytes())
    data[60] ^= 0x01
    with pytest.raises(CiphertextError, match="corrupted"):
        PartialDecryption.from_bytes(bytes(data), pk)
    # A well-formed share with altered values (re-packed by its sender): the noise check.
    h = parts[1].h.copy()
    h[2, 5] = (h[2, 5] + 1) % np.uint64(PARAMS.moduli[2])
    forged = PartialDecryption(parts[1].party_id, pk.fingerprint, ct.digest, h)
    with pytest.raises(CiphertextError, match="noise out of bounds in 1 of 16"):
        fuse(ct, [parts[0], forged, parts[2]])
    # A share made with a wrong secret (another party's key under this id): the noise check.
    wrong = shares[4].partial_decrypt(encrypt(key_for(crs, [shares[4], shares[1]], 2), [0]))
    impostor = PartialDecryption(parts[0].party_id, pk.fingerprint, ct.digest,
                                 np.zeros_like(parts[0].h) + wrong.h[:, :1])
    with pytest.raises(CiphertextError, match="noise out of bounds"):
        fuse(ct, [impostor, parts[1], parts[2]])
    # The centre altering the aggregate before the parties decrypt it: the noise check.
    c0 = ct.c0.copy()
    c0[0, 3] = (c0[0, 3] + 12345) % np.uint64(PARAMS.moduli[0])
    bad = Ciphertext(pk, ct.length, ct.summands, c0, ct.c1)
    with pytest.raises(CiphertextError, match="noise out of bounds"):
        fuse(bad, [s.partial_decrypt(bad) for s in shares[:3]])


def test_refused_public_shares(crs: CommonReference, shares: list[KeyShare]) -> None:
    pub = [s.public_share for s in shares]
    with pytest.raises(ProtocolError, match="duplicated key share from party \\[11\\]"):
        joint_public_key(PARAMS, crs, [pub[0], pub[1], pub[1]])
    with pytest.raises(ProtocolError, match="missing \\[12\\]"):
        joint_public_key(PARAMS, crs, pub[:2], expected_party_ids=[10, 11, 12])
    with pytest.raises(ProtocolError, match="at least 2 parties"):
        joint_public_key(PARAMS, crs, pub[:1])
    eight = [*pub, KeyShare.generate(PARAMS, crs, party_id=99).public_share]
    with pytest.raises(ParameterError, match="max_parties=7"):
        joint_public_key(PARAMS, crs, eight)
    other_crs = new_crs(PARAMS, b"another seed, another session..")
    alien = KeyShare.generate(PARAMS, other_crs, party_id=50).public_share
    with pytest.raises(ParameterError, match="another common reference string"):
        joint_public_key(PARAMS, crs, [pub[0], alien])
    with pytest.raises(ParameterError, match="another common reference string"):
        PublicShare.from_bytes(alien.to_bytes(), crs)
    with pytest.raises(ParameterError, match="another common reference string"):
        JointPublicKey.from_bytes(key_for(crs, shares, 2).to_bytes(), other_crs)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"moduli": ntt_primes(8192, 8)}, "128-bit bound 218"),
        ({"poly_degree": 4096, "moduli": ntt_primes(4096, 4)}, "128-bit bound 109"),
        ({"poly_degree": 2048, "moduli": ntt_primes(2048, 2)}, "128-bit bound 54"),
        ({"poly_degree": 4096, "moduli": ntt_primes(4096, 3)}, "too small to decrypt"),
        ({"moduli": ntt_primes(8192, 4)}, "too small to decrypt"),
        ({"error_std": 2.0}, "error_std"),
        ({"smudging_security": 30}, "smudging_security"),
        ({"poly_degree": 1000}, "poly_degree"),
        ({"moduli": (2147352577, 2147352577)}, "distinct"),
        ({"moduli": (2**31 - 1,)}, "prime in"),
        ({"plain_modulus": 1}, "plain_modulus"),
    ],
)
def test_parameters_outside_the_bounds_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        ThresholdParams(**kwargs)  # type: ignore[arg-type]


def test_insecure_parameters_are_refused_on_load_too() -> None:
    moduli = ntt_primes(8192, 8)
    body = struct.pack("<IB", 8192, len(moduli)) + struct.pack(f"<{len(moduli)}I", *moduli)
    body += struct.pack("<QHQHd", 2**42, 6, 2**20, 40, 3.2)
    with pytest.raises(ParameterError, match="128-bit"):
        ThresholdParams.from_bytes(pack("threshold parameters", body))


def test_default_parameters_and_their_estimate() -> None:
    p = PARAMS
    assert p.poly_degree == 8192 and p.log_q <= 218 and p.security_level == 128
    assert p.max_parties == 7 and p.max_value >= 2**40 and p.min_value <= -(2**40)
    # Smudging: N · (noise of max_summands encryptions) · 2^λ ≤ 2^(B+1).
    assert p.poly_degree * p.ciphertext_noise_bound * 2**40 <= 2 ** (p.smudging_bits + 1)
    assert p.q > 2 * p.decode_residual_bound and p.tamper_detection_bits > 10
    assert "128-bit" in p.security_estimate() and "ternary-secret table" in p.security_estimate()


def test_too_many_summands_and_bad_plaintexts_are_refused(
    crs: CommonReference, shares: list[KeyShare]
) -> None:
    pk = key_for(crs, shares, 2)
    ct = encrypt(pk, [1])
    big = Ciphertext(pk, 1, PARAMS.max_summands, ct.c0, ct.c1)
    with pytest.raises(ParameterError, match="max_summands"):
        _ = big + ct
    with pytest.raises(ValidationError, match="integers"):
        encrypt(pk, [1.5])
    with pytest.raises(ValidationError, match="must lie in"):
        encrypt(pk, [2**41])
    with pytest.raises(ValidationError, match="1-D"):
        encrypt(pk, np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(CiphertextError, match="of 1 and 2 values"):
        _ = ct + encrypt(pk, [1, 2])


# ---------------------------------------------------------------- serialisation
def test_every_object_round_trips_through_bytes(crs: CommonReference,
                                                shares: list[KeyShare]) -> None:
    assert ThresholdParams.from_bytes(PARAMS.to_bytes()) == PARAMS
    crs2 = CommonReference.from_bytes(crs.to_bytes())
    assert crs2.fingerprint == crs.fingerprint and (crs2.a_hat == crs.a_hat).all()
    share = PublicShare.from_bytes(shares[0].public_share.to_bytes(), crs2)
    assert share.party_id == 10 and (share.p_hat == shares[0].public_share.p_hat).all()
    pk = key_for(crs, shares, 3)
    pk2 = JointPublicKey.from_bytes(pk.to_bytes(), crs2)
    assert pk2.fingerprint == pk.fingerprint and pk2.party_ids == (10, 11, 12)
    ct = encrypt(pk, [5, -6])
    ct2 = Ciphertext.from_bytes(ct.to_bytes(), pk2)
    assert ct2.digest == ct.digest and ct2.summands == 1
    restored = KeyShare.from_secret_bytes(shares[0].secret_to_bytes(), crs2)
    parts = [restored.partial_decrypt(ct2), *(s.partial_decrypt(ct2) for s in shares[1:3])]
    assert fuse(ct2, parts).tolist() == [5, -6]
    assert repr(restored) == "KeyShare(party_id=10)"


def test_unknown_versions_and_wrong_kinds_are_refused(crs: CommonReference,
                                                     shares: list[KeyShare]) -> None:
    pk = key_for(crs, shares, 2)
    data = encrypt(pk, [1]).to_bytes()
    from cipherseg.schemes.threshold import _WIRE

    envelope = _WIRE.unpack(data)
    newer = dataclasses.replace(_WIRE, version=99).pack(envelope.header, envelope.blobs)
    with pytest.raises(CiphertextError, match="format version 99 is not supported"):
        Ciphertext.from_bytes(newer, pk)
    with pytest.raises(CiphertextError, match="expected a partial decryption, got a ciphertext"):
        PartialDecryption.from_bytes(data, pk)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_bad_bytes_raise_ciphertext_error_never_crash(data: st.DataObject, crs: CommonReference,
                                                     shares: list[KeyShare]) -> None:
    pk = key_for(crs, shares, 2)
    good = encrypt(pk, [1, 2, 3]).to_bytes()
    choice = data.draw(st.sampled_from(["random", "truncate", "flip"]))
    if choice == "random":
        blob = data.draw(st.binary(max_size=300))
    elif choice == "truncate":
        blob = good[:data.draw(st.integers(0, len(good) - 1))]
    else:
        pos = data.draw(st.integers(0, len(good) - 1))
        blob = good[:pos] + bytes([good[pos] ^ 0x80]) + good[pos + 1:]
    for loader in (lambda b: Ciphertext.from_bytes(b, pk),
                   lambda b: PartialDecryption.from_bytes(b, pk),
                   lambda b: JointPublicKey.from_bytes(b, crs),
                   lambda b: PublicShare.from_bytes(b, crs)):
        with pytest.raises(CiphertextError):
            loader(blob)


def test_crs_is_deterministic_per_seed() -> None:
    a, b = new_crs(PARAMS, SEED), new_crs(PARAMS, SEED)
    c = new_crs(PARAMS, SEED[::-1])
    assert (a.a_hat == b.a_hat).all() and not (a.a_hat == c.a_hat).all()
    with pytest.raises(ParameterError, match="16 to 1024 bytes"):
        new_crs(PARAMS, b"short")


# ---------------------------------------------------------------- aggregation interface
def test_the_aggregation_interface_adds_and_opens_jointly_only() -> None:
    scheme = ThresholdAggregation(PARAMS, SEED, (0, 5))
    assert isinstance(scheme, AggregationScheme) and scheme.key_party_ids == (0, 5)
    assert scheme.key_fingerprint is None
    with pytest.raises(ProtocolError, match="before the joint key"):
        scheme.encrypt(np.array([1]))
    keys = [KeyShare.for_scheme(scheme, i) for i in (0, 5)]
    with pytest.raises(ProtocolError, match="labelled party 5"):
        scheme.public_share_from_bytes(keys[1].public_share_bytes(), 0)
    with pytest.raises(ProtocolError, match="2 key parties"):
        scheme.set_joint_key([keys[0].public_share_bytes()])
    fingerprint = scheme.set_joint_key([k.public_share_bytes() for k in keys])
    assert scheme.key_fingerprint == fingerprint
    x, y = np.array([15, -2_250, 10**6]), np.array([1, 0, -(10**6)])
    total = scheme.aggregate([scheme.load(scheme.encrypt(v)) for v in (x, y)])
    assert scheme.length(total) == 3
    partials = [scheme.partial_from_bytes(k.partial_decrypt(total).to_bytes()) for k in keys]
    np.testing.assert_array_equal(scheme.fuse(total, partials), x + y)
    with pytest.raises(ProtocolError, match="missing partial decryption from party"):
        scheme.fuse(total, partials[:1])
    with pytest.raises(KeyCustodyError, match="no threshold key shares"):
        KeyShare.for_scheme(PlainAggregation(), 1)


def test_the_plain_aggregation_is_the_same_interface_without_keys() -> None:
    scheme = PlainAggregation()
    assert isinstance(scheme, AggregationScheme) and scheme.key_party_ids == ()
    blobs = [scheme.encrypt(np.array(v)) for v in ([1, 2], [3, -4])]
    total = scheme.aggregate([scheme.load(b) for b in blobs])
    assert scheme.length(total) == 2 and scheme.digest(blobs[0]) != scheme.digest(blobs[1])
    np.testing.assert_array_equal(scheme.fuse(total, []), [4, -2])
    with pytest.raises(KeyCustodyError):
        scheme.set_joint_key([b""])
    with pytest.raises(CiphertextError, match="different lengths"):
        scheme.aggregate([np.zeros(2, np.int64), np.zeros(3, np.int64)])
