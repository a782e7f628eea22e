"""Diffie–Hellman private set intersection over the prime-order subgroup of Curve25519/Ed25519.

Each holder i draws a fresh secret scalar per run and maps every identifier x (a phone number
in E.164, or any pseudonym the holders share) to a point of the prime-order subgroup,
``H(x) = from_uniform(SHA-512(domain ‖ len(session) ‖ session ‖ x)[:32])`` (libsodium's
Elligator 2 map onto Ed25519 followed by cofactor clearing), carried as the Montgomery
u-coordinate ``(1 + y)/(1 − y)`` of that point. Blinding is X25519 (libsodium's
``crypto_scalarmult``): the Montgomery ladder with a *clamped* scalar — a multiple of the
cofactor 8 — so ``blind(blind(H(x), a), b)`` is the same u-coordinate at every holder (the
*tag* of x) and, under the decisional Diffie–Hellman assumption with H a random oracle, a tag or
a partly blinded point of an identifier a party does not hold is indistinguishable from a
random element of the group. The group is the one the issue names: ``X25519(K, u(P))`` equals
``u(crypto_scalarmult_ed25519_noclamp(K mod L, P))`` for every P of the subgroup; only the
x-only representation differs (a point and its negative share one u).

**Why X25519 and no point check.** Every libsodium Ed25519 scalar multiplication re-checks its
input (canonical, on the curve, not of small order, in the prime-order subgroup — itself a
multiplication by the group order), so each blinding cost about 100 µs plus 47 µs for our own
``is_valid_point``; clearing the cofactor with three point doublings costs the same 47 µs. The
ladder needs no check: a clamped scalar is a multiple of 8, so a torsion component of a received
point is cleared by the blinding itself, a point of small order (or the identity) yields the
all-zero output, which libsodium refuses, a non-canonical encoding (u ≥ p, or the top bit set)
is reduced to the canonical one, and a u on the quadratic twist stays on the twist, whose order
is 4 times a 253-bit prime (twist security: the clamped multiple of 8 leaves nothing of small
order to learn) and never matches an honest tag. About 32 µs per blinding.

**Ring order for m ≥ 2 holders.** Holder i blinds its own set, sorts it (a random order that
leaks nothing of its file order) and sends it to holder i+1 (mod m); every holder blinds what
it receives with its own scalar, keeping the order, and passes it on; after m − 1 hops the list
comes back to holder i, in i's own order. Each holder sends its sorted tags to the compute
centre, which intersects them and returns the sorted intersection: the *shared order* every
holder then uses (row r of every holder is the same customer). For m = 2 the list of i is sent
blinded by i's scalar. For m ≥ 3 it is sent blinded by a fresh one-time scalar t_i instead, and
i applies ``a_i / t_i`` when it comes back: otherwise holder i − 1, which applies the last
scalar to i's list, would hold i's final tags next to its own and learn which of its customers
are in i's set — a pairwise intersection, more than the intersection of all sets (for m = 2 the
two coincide).

**What each party learns.** A holder: the size of every other holder's set (the lists it
blinds), and which of its own identifiers are in the intersection of all sets — nothing about
the others' identifiers outside it (DDH). The centre: the set sizes and, for m ≥ 3, how many
tags lie in each combination of sets (counts only; tags are random to it). Colluding with a
holder, the centre learns which of that holder's customers are in each other holder's set
(for m = 2 that is the intersection, which the holder learns anyway).

**Checks.** A blinding that yields the all-zero output (a point of small order or the identity
was received) raises :class:`ProtocolError`; so do a list of the wrong length, a duplicated
point and an intersection tag that is not one of the holder's own. Duplicated identifiers are
refused before anything is sent. The hash is libsodium's single Elligator 2 map (RFC 9380's
*encode_to_curve*, non-uniform: about half the curve's points are images before cofactor
clearing); DH-PSI needs only that the discrete-log relations among the H(x) are unknown, which
a single map provides. An indifferentiable hash (two maps added) would cost another 37 µs per
identifier.

>>> a, b = random_scalar(), random_scalar()
>>> alice, bob = [b"+8613800000001", b"+8613800000002"], [b"+8613800000002", b"+8613800000003"]
>>> tags_a = blind(blind(hash_to_group(alice, b"s1"), a), b)
>>> tags_b = blind(blind(hash_to_group(bob, b"s1"), b), a)
>>> [alice[i] for i, t in enumerate(tags_a) if t in set(tags_b)]
[b'+8613800000002']
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from nacl import bindings as sodium
from nacl.exceptions import RuntimeError as SodiumError

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.errors import ProtocolError, ValidationError

POINT_BYTES = 32
DOMAIN = b"cipherseg/vertical/psi/v1/hash-to-ed25519"
#: Points per task when work is spread over processes.
MIN_CHUNK = 2048
#: The field prime of Curve25519 and the order of its prime-order subgroup.
FIELD_PRIME = 2**255 - 19
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
_CLAMP_HIGH = 2**254
_CLAMP_RANDOM_BITS = 251


def random_scalar() -> bytes:
    """A fresh X25519 scalar (from the OS CSPRNG) already in clamped form: 2^254 + 8·r with r
    uniform in [0, 2^251), so X25519's clamping leaves it unchanged."""
    return _clamped(secrets.randbits(_CLAMP_RANDOM_BITS))


def _clamped(r: int) -> bytes:
    return (_CLAMP_HIGH + 8 * r).to_bytes(POINT_BYTES, "little")


def scalar_value(scalar: bytes) -> int:
    """The scalar's value modulo the group order (what it multiplies points of the group by)."""
    return int.from_bytes(scalar, "little") % GROUP_ORDER


def ratio_scalar(numerator: bytes) -> tuple[bytes, bytes]:
    """A fresh one-time scalar t and a clamped scalar s with s ≡ numerator / t (mod the group
    order): blinding by t, then (after other holders' scalars) by s, equals blinding by
    ``numerator``. About half of the draws of t give an s with a clamped form; others are
    redrawn."""
    target = scalar_value(numerator)
    inverse_8 = pow(8, -1, GROUP_ORDER)
    while True:
        one_time = random_scalar()
        s = target * pow(scalar_value(one_time), -1, GROUP_ORDER) % GROUP_ORDER
        r = (s - _CLAMP_HIGH) * inverse_8 % GROUP_ORDER
        if r < 2**_CLAMP_RANDOM_BITS:
            return one_time, _clamped(r)


def hash_to_group(identifiers: Sequence[bytes], session: bytes) -> list[bytes]:
    """Map identifiers to points of the prime-order subgroup (domain-separated, per session),
    as Montgomery u-coordinates (one field inversion for the whole list)."""
    prefix = DOMAIN + len(session).to_bytes(2, "big") + session
    ys = []
    for ident in identifiers:
        uniform = hashlib.sha512(prefix + ident).digest()[:32]
        point = sodium.crypto_core_ed25519_from_uniform(uniform)
        ys.append(int.from_bytes(point, "little") & ((1 << 255) - 1))
    denominators = [(1 - y) % FIELD_PRIME for y in ys]
    if any(d == 0 for d in denominators):  # the identity: probability about 2^-252
        raise ProtocolError("an identifier hashed to the identity; use another PSI session")
    inverses = _batch_inverse(denominators)
    return [((1 + y) * inv % FIELD_PRIME).to_bytes(POINT_BYTES, "little")
            for y, inv in zip(ys, inverses, strict=True)]


def _batch_inverse(values: Sequence[int]) -> list[int]:
    """Inverses of non-zero field elements with one exponentiation (Montgomery's trick)."""
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % FIELD_PRIME)
    inverse = pow(prefix[-1], -1, FIELD_PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = prefix[i] * inverse % FIELD_PRIME
        inverse = inverse * values[i] % FIELD_PRIME
    return out


def blind(points: Sequence[bytes], scalar: bytes) -> list[bytes]:
    """Each point times ``scalar`` (X25519). A point of small order (or the identity) gives the
    all-zero output, which libsodium refuses: :class:`ProtocolError`."""
    if len(scalar) != POINT_BYTES or any(len(p) != POINT_BYTES for p in points):
        # PyNaCl passes the buffer on unchecked: libsodium would read past a short one.
        raise ProtocolError(f"PSI points and scalars are {POINT_BYTES} bytes; refusing the list")
    try:
        return [sodium.crypto_scalarmult(scalar, p) for p in points]
    except (SodiumError, TypeError, ValueError) as exc:
        raise ProtocolError(f"a PSI point could not be blinded ({exc}); it is of small order "
                            "or not 32 bytes: refusing the list") from exc


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


def intersection_digest(tags: bytes) -> bytes:
    """SHA-256 of the packed, sorted intersection: holders report it so that the manager can
    check that every holder was given the same shared order."""
    return hashlib.sha256(b"cipherseg/vertical/psi/v1/intersection" + tags).digest()


# --- batch work over processes -------------------------------------------------------------

def _hash_task(args: tuple[list[bytes], bytes]) -> list[bytes]:
    return hash_to_group(*args)


def _blind_task(args: tuple[list[bytes], bytes]) -> list[bytes]:
    return blind(*args)


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


def blind_many(points: Sequence[bytes], scalar: bytes,
               executor: Executor | None = None) -> list[bytes]:
    """:func:`blind` spread over the executor's processes."""
    parts = _split(points, executor)
    results = _run(_blind_task, [(p, scalar) for p in parts], executor)
    return [x for part in results for x in part]  # type: ignore[attr-defined]
