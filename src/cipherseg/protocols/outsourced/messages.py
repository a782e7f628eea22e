"""Protocol 4.1's messages, its descriptor and the centre's refusal of an unknown session.

The message sequence and what each party learns: :mod:`cipherseg.protocols.outsourced`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "kmeans-outsourced"
VERSION = 1
SPEC = define_protocol(PROTOCOL, VERSION)
#: The centre masks a picked record with values uniform in ±2^MASK_BITS (``MaskedRecord``).
MASK_BITS = 24


def unknown_session(session_id: str) -> ProtocolError:
    """The refusal of a message for a session the sender has not (or no longer) open."""
    return ProtocolError(f"unknown session {session_id!r} (closed, expired after being idle, "
                         "or never uploaded); upload the data first")


@register_message
@dataclass(frozen=True, slots=True)
class Upload(Message):
    PROTOCOL = PROTOCOL
    public_context: bytes = b""
    n_samples: int = 0
    n_features: int = 0
    n_clusters: int = 0
    block_sizes: tuple[int, ...] = ()
    features: tuple[bytes, ...] = ()  # block-major: block b, feature f at b*d + f


@register_message
@dataclass(frozen=True, slots=True)
class UploadAck(Message):
    PROTOCOL = PROTOCOL
    n_blocks: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class InitStart(Message):
    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class MaskedRecord(Message):
    PROTOCOL = PROTOCOL
    slot: int = 0
    masked: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class NewCentre(Message):
    PROTOCOL = PROTOCOL
    centre: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Scores(Message):
    PROTOCOL = PROTOCOL
    n_scores: int = 0
    scores: tuple[bytes, ...] = ()  # block-major: block b, score j at b*n_scores + j


@register_message
@dataclass(frozen=True, slots=True)
class MinScores(Message):
    PROTOCOL = PROTOCOL
    min_scores: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class ShuffledD2(Message):
    PROTOCOL = PROTOCOL
    block_sizes: tuple[int, ...] = ()
    d2: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Pick(Message):
    PROTOCOL = PROTOCOL
    shuffled_block: int = 0
    slot: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class InitDone(Message):
    PROTOCOL = PROTOCOL
    centres: tuple[bytes, ...] = ()  # cluster-major: cluster j, feature f at j*d + f


@register_message
@dataclass(frozen=True, slots=True)
class Centroids(Message):
    PROTOCOL = PROTOCOL
    centroids: tuple[bytes, ...] = ()  # empty: keep the centroids the centre holds


@register_message
@dataclass(frozen=True, slots=True)
class Assignments(Message):
    PROTOCOL = PROTOCOL
    onehots: tuple[bytes, ...] = ()  # block-major: block b, cluster j≥1 at b*(k-1) + j-1


@register_message
@dataclass(frozen=True, slots=True)
class Sums(Message):
    PROTOCOL = PROTOCOL
    sums: tuple[bytes, ...] = ()  # cluster-major (k-1)×d
    counts: tuple[bytes, ...] = ()  # k-1


@register_message
@dataclass(frozen=True, slots=True)
class Close(Message):
    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class CloseAck(Message):
    PROTOCOL = PROTOCOL
