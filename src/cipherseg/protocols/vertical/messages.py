"""Messages of protocol 4.5 (vertical k-means); the sequence and the leakage are documented in
:mod:`cipherseg.protocols.vertical`.

Every message is a frozen, slotted dataclass registered with the versioned wire format of
:mod:`cipherseg.protocols.messages` (``to_bytes``/``from_bytes``; unknown types and versions
refused). Ciphertexts and packed points travel as byte blobs. This module holds no key
material, so the compute centre imports it.

>>> m = Comparisons(protocol_version=2, session_id="s", round=4, stage="lloyd", index=2,
...                 n_pairs=1, values=(b"ct",))
>>> Message.from_bytes(m.to_bytes()) == m
True
>>> stage_of(m)
'iterations'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cipherseg.protocols.messages import Message, define_protocol, register_message

PROTOCOL = "kmeans-vertical"
VERSION = 2  # 2: X25519 PSI tags, the intersection digest in ScaleReport
# Version 1 (Ed25519 tags) and 2 do not interoperate: only 2 is read, the other refused.
SPEC = define_protocol(PROTOCOL, VERSION)

MANAGER = "manager"
CENTRE = "centre"
INITS = ("k-means++", "given", "random")
COMPARISON_STAGES = ("init", "lloyd", "final")
STAGES = ("setup", "psi", "upload", "init", "iterations", "final")


def holder_name(holder_id: int) -> str:
    """Transport name of feature holder ``holder_id`` (1, 2, …)."""
    return f"holder-{holder_id}"


def new_message(cls: type[Message], session_id: str, round_: int, **fields: Any) -> Any:
    """A message of this protocol's version."""
    return cls(protocol_version=VERSION, session_id=session_id, round=round_, **fields)


@register_message
@dataclass(frozen=True, slots=True)
class Setup(Message):
    """Manager → holders and centre: the public configuration and the manager's public key
    (the centre's copy also carries relinearisation and rotation keys)."""

    PROTOCOL = PROTOCOL
    holder_ids: tuple[int, ...] = ()
    holder_features: tuple[int, ...] = ()  # d_i of each holder, in holder order
    n_clusters: int = 0
    init: str = "k-means++"
    max_iter: int = 0
    tol: float = 0.0
    dp_epsilon: float = 0.0  # 0: no differential privacy
    dp_delta: float = 0.0
    dp_lower: tuple[float, ...] = ()  # public bounds of every joined feature (DP only)
    dp_upper: tuple[float, ...] = ()
    psi_session: bytes = b""
    public_context: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class PsiBlinded(Message):
    """Holder → next holder in the ring: holder ``origin``'s points blinded ``hop`` times."""

    PROTOCOL = PROTOCOL
    origin: int = 0
    hop: int = 0
    points: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class PsiTags(Message):
    """Holder → centre: its fully blinded tags, sorted."""

    PROTOCOL = PROTOCOL
    holder_id: int = 0
    tags: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class PsiResult(Message):
    """Centre → holders: the sorted tags every holder has (the shared order)."""

    PROTOCOL = PROTOCOL
    tags: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Aligned(Message):
    """Centre → manager: the number of shared customers (the public schedule)."""

    PROTOCOL = PROTOCOL
    n_samples: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class ScaleReport(Message):
    """Holder → manager: the power of two bounding its aligned columns (|x| ≤ 2^exponent), and
    a digest of the intersection it was given (the manager checks every holder got the same)."""

    PROTOCOL = PROTOCOL
    holder_id: int = 0
    exponent: int = 0
    n_shared: int = 0  # customers in the intersection it was given
    intersection: bytes = b""  # SHA-256 of the packed sorted tags (psi.intersection_digest)


@register_message
@dataclass(frozen=True, slots=True)
class Scale(Message):
    """Manager → holders: the common exponent e; holders encrypt x / 2^e (|x| ≤ 1)."""

    PROTOCOL = PROTOCOL
    exponent: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class Upload(Message):
    """Holder → centre: its aligned columns, encrypted under the manager's public key."""

    PROTOCOL = PROTOCOL
    holder_id: int = 0
    n_features: int = 0
    block_sizes: tuple[int, ...] = ()
    features: tuple[bytes, ...] = ()  # block-major: block b, feature f at b*d_i + f


@register_message
@dataclass(frozen=True, slots=True)
class Totals(Message):
    """Centre → manager: Σ x_f over all customers, one ciphertext per joined feature."""

    PROTOCOL = PROTOCOL
    sums: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class InitStart(Message):
    """Manager → centre: begin k-means++ (the centre picks the first record)."""

    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class MaskedRecord(Message):
    """Centre → manager: the block holding the picked record, every value under a mask."""

    PROTOCOL = PROTOCOL
    step: int = 0
    slot: int = 0
    masked: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class NewCentre(Message):
    """Manager → centre: the picked (masked) record re-encrypted in every slot."""

    PROTOCOL = PROTOCOL
    step: int = 0
    centre: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class ShuffledD2(Message):
    """Centre → manager: ρ·D²(x) for every customer, blocks in a secret order."""

    PROTOCOL = PROTOCOL
    step: int = 0
    block_sizes: tuple[int, ...] = ()
    d2: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Pick(Message):
    """Manager → centre: the sampled position (block in the shuffled order, slot); block −1
    when every weight is zero (the centre then picks uniformly)."""

    PROTOCOL = PROTOCOL
    step: int = 0
    block: int = 0
    slot: int = 0


@register_message
@dataclass(frozen=True, slots=True)
class Comparisons(Message):
    """Centre → manager: r·(‖x−c_j‖² − ‖x−c_l‖² − τ) for every pair j < l, blinded by an
    independent positive factor per customer and pair."""

    PROTOCOL = PROTOCOL
    stage: str = "lloyd"  # "init" (k-means++ step), "lloyd" (iteration), "final"
    index: int = 0
    n_pairs: int = 0
    values: tuple[bytes, ...] = ()  # block-major: block b, pair p at b*n_pairs + p


@register_message
@dataclass(frozen=True, slots=True)
class OneHots(Message):
    """Manager → centre: encrypted indicators of the labels."""

    PROTOCOL = PROTOCOL
    stage: str = "lloyd"
    index: int = 0
    # Ciphertexts per block: init, one per centre so far (0..m-1); Lloyd, clusters 1..k-1 two
    # per ciphertext, h_a + i·h_b (session.packed).
    per_block: int = 0
    onehots: tuple[bytes, ...] = ()


@register_message
@dataclass(frozen=True, slots=True)
class Sums(Message):
    """Centre → manager: per-cluster feature sums over all customers, clusters 1..k-1, two
    clusters per ciphertext as the one-hots were (re: the first, im: the second)."""

    PROTOCOL = PROTOCOL
    index: int = 0
    sums: tuple[bytes, ...] = ()  # one-hot-major ⌈(k-1)/2⌉ × d


@register_message
@dataclass(frozen=True, slots=True)
class Centroids(Message):
    """Manager → centre: the next centroids, encrypted (the centre never sees them)."""

    PROTOCOL = PROTOCOL
    stage: str = "lloyd"  # "lloyd": run iteration ``index``; "final": labels only
    index: int = 0
    centroids: tuple[bytes, ...] = ()  # cluster-major k × d


@register_message
@dataclass(frozen=True, slots=True)
class Result(Message):
    """Manager → holders: the released model and the final labels in the shared order."""

    PROTOCOL = PROTOCOL
    n_iter: int = 0
    centroids: tuple[float, ...] = ()  # row-major k × d, input units, holders' columns in order
    labels: bytes = b""  # one byte per shared customer


@register_message
@dataclass(frozen=True, slots=True)
class Close(Message):
    """Manager → centre: the session is over; drop every ciphertext."""

    PROTOCOL = PROTOCOL


@register_message
@dataclass(frozen=True, slots=True)
class Abort(Message):
    """Any party → the others: the session ends without a result."""

    PROTOCOL = PROTOCOL
    reason: str = ""


def stage_of(message: Message) -> str:
    """The protocol stage a message belongs to (bytes and seconds are reported per stage)."""
    if isinstance(message, Setup):
        return "setup"
    if isinstance(message, (PsiBlinded, PsiTags, PsiResult, Aligned)):
        return "psi"
    if isinstance(message, (ScaleReport, Scale, Upload, Totals)):
        return "upload"
    if isinstance(message, (InitStart, MaskedRecord, NewCentre, ShuffledD2, Pick)):
        return "init"
    if isinstance(message, (Comparisons, OneHots, Centroids)):
        return {"init": "init", "final": "final"}.get(message.stage, "iterations")
    if isinstance(message, Sums):
        return "iterations"
    return "final"
