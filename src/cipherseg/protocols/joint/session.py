"""Protocol 4.2 (joint k-means): what every party shares — the session opened by Setup and
its aggregation scheme, the key-share commitments and the joint key built from the relayed
shares, the checks before any partial decryption (:func:`open_contributions`), message
helpers, the D² total encoding.

It holds no key material: the compute centre imports it.

See :mod:`cipherseg.protocols.joint` for the protocol and its leakage.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.messages import Message
from cipherseg.schemes.base import AggregationScheme
from cipherseg.schemes.plain import PlainAggregation
from cipherseg.schemes.rlwe_sampling import RandomSource, SeededRandomSource, SystemRandomSource
from cipherseg.schemes.threshold import ThresholdAggregation, ThresholdParams

INITS = ("k-means++", "random", "given")
STAGES = ("keygen", "init", "iterations", "final")
D2_SLOTS = 3  # per owner: mantissa high, mantissa low, exponent of its float64 D² total
_MANTISSA_SPLIT = 27


def stage_of(message: Message) -> str:
    """The protocol stage a message belongs to (for per-stage bytes and seconds)."""
    if isinstance(message, (jm.Setup, jm.KeyCommitment, jm.KeyCommitments, jm.PublicKeyShare,
                            jm.KeyShares, jm.KeyReady)):
        return "keygen"
    if isinstance(message, (jm.D2Request, jm.PickRequest, jm.PickedRecord)):
        return "init"
    if isinstance(message, (jm.EncryptedVector, jm.ContributionDigest, jm.ContributionDigests,
                            jm.Aggregate, jm.Partial)):
        return "init" if message.purpose == "d2" else "iterations"
    if isinstance(message, jm.Centroids):
        return "iterations"
    return "final"


def choice_source(random_state: int | None, label: str) -> RandomSource:
    """Source of the parties' sampling choices (never of keys or noise): the OS CSPRNG by
    default, a SHAKE stream from ``random_state`` for reproducible runs."""
    if random_state is None:
        return SystemRandomSource()
    return SeededRandomSource(int(random_state).to_bytes(16, "little", signed=True),
                              label.encode())


def generator_from(source: RandomSource) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(source.random_bytes(16), "little"))


def new_message(cls: type[Message], session_id: str, round_: int, **fields: Any) -> Any:
    return cls(protocol_version=jm.VERSION, session_id=session_id, round=round_, **fields)


def encode_total(total: float) -> list[int]:
    """A non-negative float64 as [mantissa high, mantissa low, exponent] integers (exact)."""
    if not math.isfinite(total) or total < 0:
        raise ValidationError(f"a D² total must be finite and >= 0, got {total}")
    if total == 0:
        return [0, 0, 0]
    mantissa, exponent = math.frexp(total)
    m = int(mantissa * 2**53)
    return [m >> _MANTISSA_SPLIT, m & ((1 << _MANTISSA_SPLIT) - 1), exponent - 53]


def decode_total(slots: Sequence[int]) -> float:
    hi, lo, exponent = (int(v) for v in slots)
    return math.ldexp(float((hi << _MANTISSA_SPLIT) | lo), exponent)


def new_scheme(name: str, params: bytes, crs_seed: bytes,
               key_party_ids: Sequence[int]) -> AggregationScheme:
    """The session's aggregation scheme, by the name Setup carries (its ``mode`` field):
    "threshold" (the protocol) or "plain" (the unencrypted baseline of the benchmarks)."""
    if name == "threshold":
        return ThresholdAggregation(ThresholdParams.from_bytes(params), crs_seed, key_party_ids)
    if name == "plain":
        return PlainAggregation()
    raise ProtocolError(f"unknown scheme {name!r}; expected one of {jm.MODES}")


@dataclass
class Session:
    """What every party keeps from Setup."""

    setup: jm.Setup
    encoder: FixedPointEncoder
    dp: DPConfig | None
    scheme: AggregationScheme

    @property
    def k(self) -> int:
        return self.setup.n_clusters

    @property
    def d(self) -> int:
        return self.setup.n_features


def open_session(m: jm.Setup, scheme: AggregationScheme | None = None) -> Session:
    """The session Setup ``m`` opens (``scheme``: the one the manager built it from)."""
    if m.init not in INITS:
        raise ProtocolError(f"unknown init {m.init!r}")
    key_party_ids = (jm.MANAGER_ID, *m.owner_ids)
    scheme = scheme or new_scheme(m.mode, m.params, m.crs_seed, key_party_ids)
    dp = None
    if m.dp_epsilon > 0:
        dp = DPConfig(m.dp_epsilon, m.dp_delta, m.max_iter, m.dp_lower, m.dp_upper)
    encoder = FixedPointEncoder(decimals=m.decimals, max_abs_int=scheme.max_value)
    return Session(m, encoder, dp, scheme)


def key_commitment(session_id: str, party_id: int, share: bytes) -> bytes:
    """SHA-256 over the session, the party id and its public key share (each length-prefixed):
    binding, so a party cannot choose its share after seeing the others' (a rogue key
    p' − Σ others), and tied to the party and session, so it cannot be copied."""
    h = hashlib.sha256(b"cipherseg/joint/key-commitment/v1")
    for part in (session_id.encode(), party_id.to_bytes(4, "big"), share):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


def check_commitments(session: Session, commitments: Sequence[bytes], own: bytes,
                      party_id: int) -> tuple[bytes, ...]:
    """The relayed commitments, one per key party, with ``party_id``'s own among them."""
    ids = session.scheme.key_party_ids
    mine = key_commitment(session.setup.session_id, party_id, own)
    if party_id not in ids or len(commitments) != len(ids) or \
            commitments[ids.index(party_id)] != mine:
        raise ProtocolError(
            f"the key commitments relayed by the centre do not contain party {party_id}'s "
            "commitment unchanged, one per key party; refusing to reveal its share"
        )
    return tuple(commitments)


def build_joint_key(session: Session, share_blobs: Sequence[bytes], own: bytes,
                    party_id: int, commitments: Sequence[bytes]) -> bytes:
    """The joint key's fingerprint from the shares the centre relayed, after checking that
    ``own`` (party ``party_id``'s public share) is among them unchanged and that every share
    opens the commitment its party made before any share was revealed."""
    ids = session.scheme.key_party_ids
    if party_id not in ids or len(share_blobs) != len(ids) or \
            share_blobs[ids.index(party_id)] != own:
        raise ProtocolError(
            f"the key shares relayed by the centre do not contain party {party_id}'s "
            "share unchanged; refusing the joint key"
        )
    for i, share, commitment in zip(ids, share_blobs, commitments, strict=True):
        if key_commitment(session.setup.session_id, i, share) != commitment:
            raise ProtocolError(
                f"party {i}'s key share does not open the commitment it made before the "
                "shares were revealed (a share chosen after seeing the others'); refusing "
                "the joint key"
            )
    return session.scheme.set_joint_key(share_blobs)


def expected_length(session: Session, purpose: str) -> int:
    """Values in one contribution of ``purpose``: per-owner D² slots, or k·d sums + k counts."""
    if purpose == "d2":
        return D2_SLOTS * len(session.setup.owner_ids)
    return session.k * session.d + session.k


def open_contributions(session: Session, purpose: str, contributions: Sequence[bytes],
                       digests: Sequence[bytes]) -> Any:
    """The sum to decrypt, after checking that ``contributions`` are exactly every owner's
    contribution of the round (each matches the digest its owner reported) and of the
    layout of ``purpose``. A key party decrypts nothing else."""
    owners = session.setup.owner_ids
    if len(contributions) != len(owners) or len(digests) != len(owners):
        raise ProtocolError(f"{len(contributions)} contributions for {len(owners)} owners")
    scheme = session.scheme
    loaded = []
    for owner, blob, digest in zip(owners, contributions, digests, strict=True):
        if scheme.digest(blob) != digest:
            raise ProtocolError(
                f"the contribution relayed as owner {owner}'s does not match the digest that "
                "owner reported; refusing to decrypt"
            )
        ct = scheme.load(blob)
        if scheme.length(ct) != expected_length(session, purpose):
            raise ProtocolError(
                f"owner {owner}'s {purpose!r} contribution holds {scheme.length(ct)} values, "
                f"expected {expected_length(session, purpose)}; refusing to decrypt"
            )
        loaded.append(ct)
    return scheme.aggregate(loaded)
