"""Messages, party names and the fixed-point codec of the threshold secure sum; the sequence
and leakage are in :mod:`cipherseg.protocols.scoring.secure_sum`.

This module holds no key material, so the compute centre can import it.

>>> from cipherseg.protocols.messages import Message
>>> m = Contribution(protocol_version=VERSION, session_id="s", round=1, length=3,
...                  ciphertext=b"ct")
>>> Message.from_bytes(m.to_bytes()) == m
True
>>> decode(encode([1.5, -2.25, 2.0e12], 6), 3, 6).tolist()
[1.5, -2.25, 2000000000000.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from cipherseg.errors import EncodingError, ProtocolError
from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "secure-sum"
VERSION = 1
SPEC = define_protocol(PROTOCOL, VERSION)

MANAGER = "manager"
CENTRE = "centre"
MANAGER_ID = 0
"""The manager's threshold party id (as in protocol 4.2); owners are 1, 2, …"""

LIMB_BITS = 36
LIMBS = 2
"""Each fixed-point value travels as two balanced 36-bit limbs: |value|·10^decimals < 2^71."""


def owner_name(party_id: int) -> str:
    """Transport name of the data owner with threshold party id ``party_id`` (1, 2, …)."""
    if party_id == MANAGER_ID:
        raise ProtocolError("party id 0 is the manager's; owners are 1, 2, …")
    return f"owner-{party_id}"


def new_message(cls: type[Message], session_id: str, round_: int, **fields: Any) -> Any:
    return cls(protocol_version=VERSION, session_id=session_id, round=round_, **fields)


@register_message
@dataclass(frozen=True, slots=True)
class Setup(Message):
    """Manager → centre and owners: parameters, the common reference string's seed, the
    owners' party ids and the fixed-point precision."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    params: bytes = b""  # ThresholdParams.to_bytes()
    crs_seed: bytes = b""
    owner_ids: tuple[int, ...] = ()
    decimals: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class PublicKeyShare(Message):
    """Key party (manager or owner) → centre: its public key share."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    party_id: int = 0
    share: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class KeyShares(Message):
    """Centre → key parties: every public share, so each party builds the joint key itself."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    shares: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class KeyReady(Message):
    """Owner → manager: the fingerprint of the joint key it built."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    party_id: int = 0
    key_fingerprint: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Ready(Message):
    """Manager → owners: every party built the same joint key; contributions may start."""

    PROTOCOL: ClassVar[str] = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class Contribution(Message):
    """Owner → centre: its encrypted vector for sum ``round`` (1, 2, …)."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    length: int = 0
    ciphertext: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class ContributionDigest(Message):
    """Owner → manager: the digest of the ciphertext it sent the centre for ``round``."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    party_id: int = 0
    digest: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Aggregate(Message):
    """Centre → key parties: the sum of every owner's contribution to ``round``; the
    manager's copy also carries the contributions themselves (``parts``, in owner-id order),
    so that it can check the sum before anyone decrypts it."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    length: int = 0
    ciphertext: bytes = b""
    parts: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Approved(Message):
    """Manager → owners: the aggregate of ``round`` with this digest is the sum of the
    committed contributions; decrypt that one (and no other)."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    digest: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Partial(Message):
    """Owner → manager: its partial decryption of the round's aggregate."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    party_id: int = 0
    partial: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Total(Message):
    """Manager → owners: the decrypted sum of ``round`` (what FedAvg releases anyway)."""

    PROTOCOL: ClassVar[str] = PROTOCOL
    values: tuple[float, ...] = ()


def encode(values: Sequence[float] | npt.NDArray[np.float64],
           decimals: int) -> npt.NDArray[np.int64]:
    """Fixed-point ``values`` (scale 10^decimals) as two signed 36-bit limbs each,
    limb-major: all low limbs, then all high limbs."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise EncodingError("cannot aggregate NaN or infinite values")
    scale = 10**decimals
    ints = [round(float(x) * scale) for x in v]
    bound = 1 << (LIMB_BITS * LIMBS - 1)
    if any(abs(m) >= bound for m in ints):
        raise EncodingError(
            f"a value exceeds the secure-sum range ±2^{LIMB_BITS * LIMBS - 1}/10^{decimals}; "
            "lower decimals"
        )
    half, base = 1 << (LIMB_BITS - 1), 1 << LIMB_BITS
    limbs = np.empty((LIMBS, len(ints)), dtype=np.int64)
    for j, m in enumerate(ints):
        for i in range(LIMBS):
            digit = ((m + half) % base) - half  # balanced digit in [-2^35, 2^35)
            limbs[i, j] = digit
            m = (m - digit) >> LIMB_BITS
    return limbs.ravel()


def decode(limbs: npt.NDArray[np.int64], length: int, decimals: int
           ) -> npt.NDArray[np.float64]:
    """Inverse of :func:`encode` on a sum of encodings (limbs may have carried)."""
    if limbs.size < LIMBS * length:
        raise ProtocolError(f"a sum of {length} values needs {LIMBS * length} limbs, got "
                            f"{limbs.size}")
    parts = limbs[:LIMBS * length].reshape(LIMBS, length)
    scale = 10**decimals
    return np.array([sum(int(parts[i, j]) << (LIMB_BITS * i) for i in range(LIMBS)) / scale
                     for j in range(length)], dtype=np.float64)
