"""Diffie–Hellman private set intersection over the prime-order subgroup of Ed25519.

Each holder i draws a fresh secret scalar a_i per run and maps every identifier x (a phone
number in E.164, or any pseudonym the holders share) to a point of the prime-order subgroup,
``H(x) = from_uniform(SHA-512(domain ‖ session ‖ x)[:32])`` (libsodium's Elligator 2 map
followed by cofactor clearing). Exponentiation commutes, so ``H(x)^(a_1·…·a_m)`` — the *tag*
of x — is the same at every holder, and under the decisional Diffie–Hellman assumption (with H
a random oracle) a tag, or a partly blinded point, of an identifier a party does not hold is
indistinguishable from a random group element.

**Ring order for m ≥ 2 holders.** Holder i blinds its own set with a_i, sorts it (a random
order that leaks nothing of its file order) and sends it to holder i+1 (mod m); every holder
blinds what it receives with its own scalar, keeping the order, and passes it on; after m − 1
hops the list comes back to holder i, now fully blinded, in i's own order. Each holder sends
its sorted tags to the compute centre, which intersects them and returns the sorted
intersection: the *shared order* every holder then uses (row r of every holder is the same
customer). Two holders is the case m = 2 (A → B → A and B → A → B).

**What each party learns.** A holder: the size of every other holder's set (the lists it
blinds), and which of its own identifiers are in the intersection of all sets — nothing about
the others' identifiers outside it (DDH). The centre: the set sizes and, for m ≥ 3, how many
tags lie in each combination of sets (counts only; tags are random to it). Colluding with a
holder, the centre learns which of that holder's customers are in each other holder's set
(for m = 2 that is the intersection, which the holder learns anyway).

**Checks.** Every point received from another party is checked with
``crypto_core_ed25519_is_valid_point`` (canonical, on the curve, not of small order, in the
prime-order subgroup) before it is used; a list of the wrong length, a duplicated point or an
intersection tag that is not one of the holder's own raises :class:`ProtocolError`.
Duplicated identifiers are refused before anything is sent.

>>> a, b = random_scalar(), random_scalar()
>>> alice, bob = [b"+8613800000001", b"+8613800000002"], [b"+8613800000002", b"+8613800000003"]
>>> tags_a = blind(blind(hash_to_group(alice, b"s1"), a), b)
>>> tags_b = blind(blind(hash_to_group(bob, b"s1"), b), a)
>>> [alice[i] for i, t in enumerate(tags_a) if t in set(tags_b)]
[b'+8613800000002']
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.errors import ProtocolError, ValidationError

POINT_BYTES = 32
DOMAIN = b"cipherseg/vertical/psi/v1/hash-to-ed25519"
#: Points per task when work is spread over processes.
MIN_CHUNK = 2048


def random_scalar() -> bytes:
    """A fresh uniform non-zero scalar modulo the group order L (from ``os.urandom``)."""
    while True:
        scalar: bytes = sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))
        if any(scalar):
            return scalar


def hash_to_group(identifiers: Sequence[bytes], session: bytes) -> list[bytes]:
    """Map identifiers to points of the prime-order subgroup (domain-separated, per session)."""
    prefix = DOMAIN + len(session).to_bytes(2, "big") + session
    out = []
    for ident in identifiers:
        uniform = hashlib.sha512(prefix + ident).digest()[:32]
        out.append(sodium.crypto_core_ed25519_from_uniform(uniform))
    return out


def blind(points: Sequence[bytes], scalar: bytes) -> list[bytes]:
    """Each point to the power ``scalar`` (libsodium refuses small-order inputs and results)."""
    try:
        return [sodium.crypto_scalarmult_ed25519_noclamp(scalar, p) for p in points]
    except SodiumError as exc:
        raise ProtocolError(f"a PSI point could not be blinded ({exc}); it is not a valid "
                            "point of the group") from exc


def check_points(points: Sequence[bytes], what: str) -> None:
    """Refuse any point outside the prime-order subgroup (or not a canonical encoding)."""
    for index, point in enumerate(points):
        if len(point) != POINT_BYTES or not sodium.crypto_core_ed25519_is_valid_point(point):
            raise ProtocolError(f"{what}: element {index} is not a point of the prime-order "
                                "subgroup of Ed25519; refusing the list")


def pack_points(points: Sequence[bytes]) -> bytes:
    """Concatenate 32-byte points (the wire form of a list of points).

    >>> unpack_points(pack_points([b"\\x01" * 32, b"\\x02" * 32]), "doc") == [b"\\x01" * 32,
    ...                                                                    b"\\x02" * 32]
    True
    """
    for p in points:
        if len(p) != POINT_BYTES:
            raise ValidationError(f"a point must be {POINT_BYTES} bytes, got {len(p)}")
    return b"".join(points)


def unpack_points(blob: bytes, what: str, *, expected: int | None = None) -> list[bytes]:
    """Split a packed list; refuse a length that is not a whole number of points, or not
    ``expected`` points."""
    if len(blob) % POINT_BYTES:
        raise ProtocolError(f"{what}: {len(blob)} bytes is not a whole number of "
                            f"{POINT_BYTES}-byte points")
    count = len(blob) // POINT_BYTES
    if expected is not None and count != expected:
        raise ProtocolError(f"{what}: {count} points, expected {expected}")
    return [blob[i:i + POINT_BYTES] for i in range(0, len(blob), POINT_BYTES)]


def check_unique(identifiers: Sequence[bytes], who: str) -> None:
    """Refuse duplicated identifiers (they would make the shared order ambiguous)."""
    seen: set[bytes] = set()
    for ident in identifiers:
        if ident in seen:
            raise ValidationError(f"{who}: the customer identifier {_masked(ident)} appears "
                                  "more than once; deduplicate the customer list first")
        seen.add(ident)


def _masked(ident: bytes) -> str:
    text = ident.decode("utf-8", "replace")
    return text[:3] + "****" + text[-2:] if len(text) > 6 else "****"


# --- batch work over processes -------------------------------------------------------------

def _hash_task(args: tuple[list[bytes], bytes]) -> list[bytes]:
    return hash_to_group(*args)


def _check_blind_task(args: tuple[list[bytes], bytes, str]) -> list[bytes]:
    points, scalar, what = args
    check_points(points, what)
    return blind(points, scalar)


def _blind_task(args: tuple[list[bytes], bytes]) -> list[bytes]:
    return blind(*args)


def _check_task(args: tuple[list[bytes], str]) -> bool:
    check_points(*args)
    return True


def _split(items: Sequence[bytes], executor: Executor | None) -> list[list[bytes]]:
    workers = 1 if executor is None else executor.n_workers
    parts = max(1, min(workers * 4, len(items) // MIN_CHUNK or 1))
    return [[items[i] for i in chunk] for chunk in chunk_indices(len(items), parts)] or [[]]


def _run(fn: object, args: list[tuple[object, ...]], executor: Executor | None) -> list[object]:
    if executor is None or executor.n_workers == 1 or len(args) == 1:
        return [fn(a) for a in args]  # type: ignore[operator]
    return executor.map(fn, args)  # type: ignore[arg-type]


def hash_many(identifiers: Sequence[bytes], session: bytes,
              executor: Executor | None = None) -> list[bytes]:
    """:func:`hash_to_group` spread over the executor's processes."""
    parts = _split(identifiers, executor)
    results = _run(_hash_task, [(p, session) for p in parts], executor)
    return [x for part in results for x in part]  # type: ignore[attr-defined]


def blind_many(points: Sequence[bytes], scalar: bytes, executor: Executor | None = None,
               *, check: str | None = None) -> list[bytes]:
    """:func:`blind` (after :func:`check_points` when ``check`` names the list) spread over
    the executor's processes."""
    parts = _split(points, executor)
    if check is None:
        results = _run(_blind_task, [(p, scalar) for p in parts], executor)
    else:
        results = _run(_check_blind_task, [(p, scalar, check) for p in parts], executor)
    return [x for part in results for x in part]  # type: ignore[attr-defined]


def check_many(points: Sequence[bytes], what: str, executor: Executor | None = None) -> None:
    """:func:`check_points` spread over the executor's processes."""
    parts = _split(points, executor)
    _run(_check_task, [(p, what) for p in parts], executor)
