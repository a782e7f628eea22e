"""DH-PSI over Ed25519 (protocol 4.5's alignment): correctness, refusals, encodings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl import bindings as sodium

from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.protocols.vertical import psi

ids = st.binary(min_size=1, max_size=24)


def _ring_tags(sets: list[list[bytes]], session: bytes) -> list[list[bytes]]:
    """Every holder's fully blinded tags (each list blinded by every scalar)."""
    scalars = [psi.random_scalar() for _ in sets]
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
    assert all(sodium.crypto_core_ed25519_is_valid_point(p) for p in one + two)


def test_fresh_scalars_give_unlinkable_tags_across_runs() -> None:
    first = _ring_tags([[b"x"], [b"x"]], b"s" * 16)[0]
    second = _ring_tags([[b"x"], [b"x"]], b"s" * 16)[0]
    assert first != second


def test_points_outside_the_prime_order_subgroup_are_refused() -> None:
    good = psi.hash_to_group([b"x"], b"s" * 16)[0]
    # A point with a torsion component: valid curve point, not in the prime-order subgroup.
    torsion = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
    mixed = sodium.crypto_core_ed25519_add(good, torsion)
    with pytest.raises(ProtocolError, match="prime-order subgroup"):
        psi.check_points([good, mixed], "test list")
    with pytest.raises(ProtocolError, match="element 0"):
        psi.check_points([b"\xff" * 32], "test list")
    with pytest.raises(ProtocolError):
        psi.blind_many([b"\x01" + b"\x00" * 31], psi.random_scalar(), check="small order")


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
        parallel = psi.blind_many(psi.hash_many(items, b"s" * 16, ex), scalar, ex, check="x")
    assert parallel == serial
