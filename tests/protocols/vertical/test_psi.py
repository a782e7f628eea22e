"""DH-PSI over the prime-order subgroup of Curve25519/Ed25519 (protocol 4.5's alignment):
correctness, refusals and neutralised points, encodings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl import bindings as sodium

from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.protocols.vertical import psi

ids = st.binary(min_size=1, max_size=24)


def _ring_tags(sets: list[list[bytes]], session: bytes,
               scalars: list[bytes] | None = None) -> list[list[bytes]]:
    """Every holder's fully blinded tags (each list blinded by every scalar; fresh scalars
    unless given)."""
    scalars = scalars or [psi.random_scalar() for _ in sets]
    out = []
    for items in sets:
        points = psi.hash_to_group(items, session)
        for scalar in scalars:
            points = psi.blind(points, scalar)
        out.append(points)
    return out


@given(st.lists(ids, unique=True, max_size=12), st.lists(ids, unique=True, max_size=12))
def test_tags_match_exactly_on_the_intersection(a: list[bytes], b: list[bytes]) -> None:
    tags_a, tags_b = _ring_tags([a, b], b"session-0123456789")
    found = {a[i] for i, t in enumerate(tags_a) if t in set(tags_b)}
    assert found == set(a) & set(b)


def test_three_holders_intersect_all_three() -> None:
    sets = [[b"1", b"2", b"3", b"4"], [b"2", b"3", b"4", b"5"], [b"3", b"4", b"6"]]
    tags = _ring_tags(sets, b"s" * 16)
    shared = set(tags[0]) & set(tags[1]) & set(tags[2])
    assert {sets[0][i] for i, t in enumerate(tags[0]) if t in shared} == {b"3", b"4"}


def test_session_separates_the_hash() -> None:
    one = psi.hash_to_group([b"+8613800000001"], b"a" * 16)
    two = psi.hash_to_group([b"+8613800000001"], b"b" * 16)
    assert one != two
    assert all(len(u) == 32 and int.from_bytes(u, "little") < psi.FIELD_PRIME for u in one + two)


def test_fresh_scalars_give_unlinkable_tags_across_runs() -> None:
    first = _ring_tags([[b"x"], [b"x"]], b"s" * 16)[0]
    second = _ring_tags([[b"x"], [b"x"]], b"s" * 16)[0]
    assert first != second


def _u(ed_point: bytes) -> bytes:
    """Montgomery u-coordinate of an Ed25519 point encoding."""
    y = int.from_bytes(ed_point, "little") & ((1 << 255) - 1)
    p = psi.FIELD_PRIME
    return ((1 + y) * pow(1 - y, -1, p) % p).to_bytes(32, "little")


def test_the_group_is_ed25519s_prime_order_subgroup() -> None:
    """X25519 with our scalars is Ed25519's scalar multiplication read through u = (1+y)/(1−y):
    the same group as crypto_scalarmult_ed25519_noclamp, x-only."""
    uniform = bytes(range(32))
    point = sodium.crypto_core_ed25519_from_uniform(uniform)
    scalar = psi.random_scalar()
    ed = sodium.crypto_scalarmult_ed25519_noclamp(
        psi.scalar_value(scalar).to_bytes(32, "little"), point)
    assert psi.blind([_u(point)], scalar) == [_u(ed)]


# Curve25519 u-coordinates of the points of order 1, 2, 4 and 8 (libsodium's list), with
# non-canonical encodings of 0 and 1 (u + p) and of −1.
SMALL_ORDER = [0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
               39382357235489614581723060781553021112529911719440698176882885853963445705823,
               psi.FIELD_PRIME - 1, psi.FIELD_PRIME, psi.FIELD_PRIME + 1]


@pytest.mark.parametrize("u", SMALL_ORDER)
def test_small_order_points_are_refused(u: int) -> None:
    with pytest.raises(ProtocolError, match="small order"):
        psi.blind_many([u.to_bytes(32, "little")], psi.random_scalar())


def test_a_torsion_component_is_cleared_by_the_blinding() -> None:
    good = sodium.crypto_core_ed25519_from_uniform(b"\x07" * 32)
    torsion = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    mixed = sodium.crypto_core_ed25519_add(good, torsion)  # on the curve, not in the subgroup
    scalar = psi.random_scalar()
    assert _u(mixed) != _u(good)
    assert psi.blind([_u(mixed)], scalar) == psi.blind([_u(good)], scalar)


def test_non_canonical_encodings_are_neutralised() -> None:
    scalar = psi.random_scalar()
    base = (9).to_bytes(32, "little")  # the generator's u
    above_p = (9 + psi.FIELD_PRIME).to_bytes(32, "little")
    top_bit = (9 + 2**255).to_bytes(32, "little")
    assert psi.blind([above_p], scalar) == psi.blind([top_bit], scalar) == psi.blind([base],
                                                                                   scalar)


def _on_curve(u: int) -> bool:
    p = psi.FIELD_PRIME
    rhs = (u**3 + 486662 * u**2 + u) % p
    return rhs == 0 or pow(rhs, (p - 1) // 2, p) == 1


def test_a_point_on_the_twist_stays_there_and_never_matches_a_tag() -> None:
    u = next(v for v in range(2, 100) if not _on_curve(v))
    scalar = psi.random_scalar()
    out = psi.blind([u.to_bytes(32, "little")], scalar)[0]
    assert not _on_curve(int.from_bytes(out, "little"))
    tags = psi.blind(psi.hash_to_group([str(i).encode() for i in range(50)], b"s" * 16), scalar)
    assert all(_on_curve(int.from_bytes(t, "little")) for t in tags)
    assert out not in tags


def test_a_point_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ProtocolError):
        psi.blind([b"\x09" * 31], psi.random_scalar())


@given(st.lists(ids, unique=True, max_size=8), st.lists(ids, unique=True, max_size=8),
       st.lists(ids, unique=True, max_size=8))
def test_one_time_scalars_keep_three_holders_tags_equal(a: list[bytes], b: list[bytes],
                                                        c: list[bytes]) -> None:
    """m ≥ 3: each holder sends its list under a one-time scalar t and applies a/t at the end;
    the tags are those of the plain ring, equal exactly on the common intersection."""
    sets, session = [a, b, c], b"s" * 16
    scalars = [psi.random_scalar() for _ in sets]
    tags = []
    for i, items in enumerate(sets):
        one_time, finish = psi.ratio_scalar(scalars[i])
        points = psi.blind(psi.hash_to_group(items, session), one_time)
        for j in (1, 2):
            points = psi.blind(points, scalars[(i + j) % 3])
        tags.append(psi.blind(points, finish))
    plain = _ring_tags(sets, session, scalars)
    assert tags == plain
    shared = set(tags[0]) & set(tags[1]) & set(tags[2])
    assert {a[i] for i, t in enumerate(tags[0]) if t in shared} == set(a) & set(b) & set(c)


def test_duplicated_identifiers_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValidationError, match=r"\+86\*\*\*\*01") as info:
        psi.check_unique([b"+8613800000001", b"+8613800000001"], "holder-1")
    assert "13800000" not in str(info.value)


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_packed_points_round_trip(points: list[bytes]) -> None:
    blob = psi.pack_points(points)
    assert psi.unpack_points(blob, "t", expected=len(points)) == points


@given(st.binary(max_size=200))
def test_unpack_refuses_partial_points_and_wrong_counts(blob: bytes) -> None:
    if len(blob) % 32:
        with pytest.raises(ProtocolError, match="whole number"):
            psi.unpack_points(blob, "t")
    else:
        assert len(psi.unpack_points(blob, "t")) == len(blob) // 32
        with pytest.raises(ProtocolError, match="expected"):
            psi.unpack_points(blob, "t", expected=len(blob) // 32 + 1)


def test_pack_refuses_points_of_the_wrong_size() -> None:
    with pytest.raises(ValidationError):
        psi.pack_points([b"short"])


def test_batches_over_processes_equal_the_serial_result() -> None:
    from cipherseg.engine.local import LocalExecutor

    items = [str(i).encode() for i in range(2 * psi.MIN_CHUNK + 10)]
    scalar = psi.random_scalar()
    serial = psi.blind(psi.hash_to_group(items, b"s" * 16), scalar)
    with LocalExecutor(2) as ex:
        parallel = psi.blind_many(psi.hash_many(items, b"s" * 16, ex), scalar, ex)
    assert parallel == serial
