"""Protocol 4.1 — outsourced k-means: one data owner, one compute centre, CKKS.

Message sequence (owner = client, centre = server; every message is a versioned
:class:`~cipherseg.protocols.messages.Message`)::

    Upload(public context, column-packed feature blocks)      → UploadAck
    # k-means++ with secure selection
    InitStart                                                 → MaskedRecord(slot, x+R)
    NewCentre(enc broadcast centre)        (m < k centres)    → Scores(s_1..s_{m-1} per block)
    MinScores(enc min(0, s) per block)                        → ShuffledD2(r·D², permuted blocks)
    Pick(shuffled block, slot)                                → MaskedRecord(slot, x+R)
    NewCentre(enc broadcast centre)        (k-th centre)      → InitDone(enc init centres)
    # Lloyd iterations
    Centroids(enc broadcast centroids, or none = the init ones) → Scores(s_1..s_{k-1} per block)
    Assignments(enc one-hots for clusters 1..k-1 per block)     → Sums(per-slot sums, counts)
    Close                                                       → CloseAck

Leakage (ARCHITECTURE §1 terms):

* **Compute centre** learns the number of customers and features, the block size, the number
  of clusters and iterations (the public schedule), and the index of every record picked as an
  initial centre (it picks the first one itself and un-shuffles the owner's later picks). It
  never sees a plaintext value: features, distances, scores, labels, centroids and counts all
  stay encrypted under the owner's key; it holds no secret key.
* **Data owner** (key holder) learns, each iteration, the k−1 score differences
  ``δ_j − δ_0`` of every customer, hence the labels, the centroids and the cluster sizes — all
  functions of its own data. During k-means++ it sees D² values multiplied by a secret factor
  and with the blocks in a secret order (so it cannot tell which block a value belongs to; the
  slot order inside a block is kept — a slot-level shuffle would need 18 MB of rotation keys),
  the slot number (record index modulo 4096) of each picked record, and that record's values
  under a uniform additive mask of ±2^24 (statistical hiding of the normalised value, |x| ≤ 1,
  to about 2^-24). It learns the initial centres themselves at ``InitDone`` (its own records).
* Malicious behaviour is out of scope: both parties are honest-but-curious; the transport must
  authenticate the parties (TLS) against third parties. The owner refuses decrypted replies
  outside the ranges an honest centre produces (:mod:`cipherseg.protocols.owner_checks`):
  that catches faults and crude tampering, not wrong values inside those ranges.
"""

from __future__ import annotations

from dataclasses import dataclass

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message, register_message

PROTOCOL = "kmeans-outsourced"
VERSION = 1
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
