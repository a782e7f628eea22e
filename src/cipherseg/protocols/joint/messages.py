"""Messages of protocol 4.2 (joint k-means); the sequence and leakage are documented in
:mod:`cipherseg.protocols.joint`.

This module holds no key material, so the compute centre
(:mod:`cipherseg.protocols.joint.centre`) can import it.

>>> m = EncryptedVector(protocol_version=VERSION, session_id="s", round=3, purpose="stats",
...                     ciphertext=b"ct")
>>> Message.from_bytes(m.to_bytes()) == m
True
"""

from __future__ import annotations

from dataclasses import dataclass

from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "kmeans-joint"
# 2: key shares committed before they are revealed (KeyCommitment, KeyCommitments); owners
# report their contributions' digests to the manager, which relays them (ContributionDigest,
# ContributionDigests); the centre relays every contribution instead of their sum (Aggregate).
VERSION = 2
SPEC = define_protocol(PROTOCOL, VERSION)

MANAGER = "manager"
CENTRE = "centre"
MANAGER_ID = 0
MODES = ("threshold", "plain")
PURPOSES = ("d2", "stats")


def owner_name(party_id: int) -> str:
    """Transport name of the data owner with threshold party id ``party_id`` (1, 2, …)."""
    return f"owner-{party_id}"


@register_message
@dataclass(frozen=True, slots=True)
class Setup(Message):
    """Manager → owners and centre: the session's public configuration."""

    PROTOCOL = PROTOCOL
    mode: str = "threshold"  # "plain": federated baseline without encryption (benchmarks only)
    params: bytes = b""  # ThresholdParams.to_bytes()
    crs_seed: bytes = b""
    owner_ids: tuple[int, ...] = ()
    n_clusters: int = 0
    n_features: int = 0
    decimals: int = 0
    init: str = "k-means++"  # "k-means++", "random" (data-independent) or "given"
    max_iter: int = 0
    tol: float = 0.0
    dp_epsilon: float = 0.0  # 0: no differential privacy
    dp_delta: float = 0.0
    dp_lower: tuple[float, ...] = ()
    dp_upper: tuple[float, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class KeyCommitment(Message):
    """Key party → centre: SHA-256 of (session, party id, public key share), sent before any
    share is revealed (:func:`cipherseg.protocols.joint.session.key_commitment`)."""

    PROTOCOL = PROTOCOL
    party_id: int = 0
    commitment: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class KeyCommitments(Message):
    """Centre → key parties: every key party's commitment (manager first, then owners)."""

    PROTOCOL = PROTOCOL
    commitments: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class PublicKeyShare(Message):
    """Key party → centre: its public key share, once it holds every commitment."""

    PROTOCOL = PROTOCOL
    party_id: int = 0
    share: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class KeyShares(Message):
    """Centre → key parties: every public share, so each party builds the joint key itself."""

    PROTOCOL = PROTOCOL
    shares: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class KeyReady(Message):
    """Owner → manager: the joint key it built (fingerprint), which must be everyone's."""

    PROTOCOL = PROTOCOL
    party_id: int = 0
    key_fingerprint: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class D2Request(Message):
    """Manager → owners: k-means++ step ``step``; the centres chosen so far (fixed point)."""

    PROTOCOL = PROTOCOL
    step: int = 0
    centres: tuple[int, ...] = ()  # row-major, step × n_features encoded integers


@register_message
@dataclass(frozen=True, slots=True)
class EncryptedVector(Message):
    """Owner → centre: an encrypted contribution (D² total or per-cluster sums and counts)."""

    PROTOCOL = PROTOCOL
    purpose: str = "stats"
    ciphertext: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class ContributionDigest(Message):
    """Owner → manager: the digest of the contribution it sent the centre this round."""

    PROTOCOL = PROTOCOL
    purpose: str = "stats"
    party_id: int = 0
    digest: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class ContributionDigests(Message):
    """Manager → key-holding owners: every owner's contribution digest for the round."""

    PROTOCOL = PROTOCOL
    purpose: str = "stats"
    digests: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Aggregate(Message):
    """Centre → key parties: every owner's contribution of the round (in owner order); each
    key party checks them against the digests and decrypts their sum."""

    PROTOCOL = PROTOCOL
    purpose: str = "stats"
    contributions: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Partial(Message):
    """Key party → manager: its partial decryption of the round's aggregate."""

    PROTOCOL = PROTOCOL
    purpose: str = "stats"
    party_id: int = 0
    partial: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class PickRequest(Message):
    """Manager → the sampled owner: pick a record with probability ∝ D²."""

    PROTOCOL = PROTOCOL
    step: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class PickedRecord(Message):
    """Owner → manager: the picked record (fixed point), released as an initial centre."""

    PROTOCOL = PROTOCOL
    step: int = 0
    record: tuple[int, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Centroids(Message):
    """Manager → owners: the released centroids of Lloyd iteration ``iteration``."""

    PROTOCOL = PROTOCOL
    iteration: int = 0
    centroids: tuple[float, ...] = ()  # row-major k × d, business units


@register_message
@dataclass(frozen=True, slots=True)
class Final(Message):
    """Manager → owners: the final model; owners label their own customers with it."""

    PROTOCOL = PROTOCOL
    n_iter: int = 0
    centroids: tuple[float, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Close(Message):
    """Manager → centre: the session is over (no model is sent to the centre)."""

    PROTOCOL = PROTOCOL


__all__ = [
    "CENTRE", "MANAGER", "MANAGER_ID", "MODES", "PROTOCOL", "PURPOSES", "VERSION", "Aggregate",
    "Centroids", "Close", "ContributionDigest", "ContributionDigests", "D2Request",
    "EncryptedVector", "Final", "KeyCommitment", "KeyCommitments", "KeyReady", "KeyShares",
    "Message", "Partial", "PickRequest", "PickedRecord", "PublicKeyShare", "Setup", "owner_name",
]
