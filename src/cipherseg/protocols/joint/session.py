"""Protocol 4.2 (joint k-means): what every party shares — the session opened by Setup,
the joint key built from the relayed shares, message helpers, the D² total encoding.

It holds no key material: the compute centre imports it.

See :mod:`cipherseg.protocols.joint` for the protocol and its leakage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Party
from cipherseg.schemes.rlwe_sampling import RandomSource, SeededRandomSource, SystemRandomSource
from cipherseg.schemes.threshold import (
    CommonReference,
    JointPublicKey,
    PublicShare,
    ThresholdParams,
    joint_public_key,
    new_crs,
)

INITS = ("k-means++", "random", "given")
STAGES = ("keygen", "init", "iterations", "final")
D2_SLOTS = 3  # per owner: mantissa high, mantissa low, exponent of its float64 D² total
_MANTISSA_SPLIT = 27


class JointParty(Party, Protocol):
    """A party of this protocol: the sans-IO contract, with CPU seconds per step."""

    timings: dict[str, float]


def stage_of(message: Message) -> str:
    """The protocol stage a message belongs to (for per-stage bytes and seconds)."""
    if isinstance(message, (jm.Setup, jm.PublicKeyShare, jm.KeyShares, jm.KeyReady)):
        return "keygen"
    if isinstance(message, (jm.D2Request, jm.PickRequest, jm.PickedRecord)):
        return "init"
    if isinstance(message, (jm.EncryptedVector, jm.Aggregate, jm.Partial)):
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


def plain_to_bytes(values: Any) -> bytes:
    """A plain-mode contribution or aggregate on the wire: little-endian int64 values."""
    return np.ascontiguousarray(values, dtype="<i8").tobytes()


def plain_from_bytes(data: bytes) -> npt.NDArray[np.int64]:
    if len(data) % 8:
        raise ProtocolError("plain contribution is not a whole number of int64 values")
    return np.frombuffer(data, dtype="<i8").astype(np.int64)


@dataclass
class Session:
    """What every party keeps from Setup."""

    setup: jm.Setup
    encoder: FixedPointEncoder
    dp: DPConfig | None
    params: ThresholdParams | None
    crs: CommonReference | None

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        return (jm.MANAGER_ID, *self.setup.owner_ids)

    @property
    def k(self) -> int:
        return self.setup.n_clusters

    @property
    def d(self) -> int:
        return self.setup.n_features


def open_session(m: jm.Setup) -> Session:
    if m.mode not in jm.MODES:
        raise ProtocolError(f"unknown mode {m.mode!r}; expected one of {jm.MODES}")
    if m.init not in INITS:
        raise ProtocolError(f"unknown init {m.init!r}")
    params = crs = None
    if m.mode == "threshold":
        params = ThresholdParams.from_bytes(m.params)
        crs = new_crs(params, m.crs_seed)
        if len(m.owner_ids) + 1 > params.max_parties:
            raise ParameterError(
                f"{len(m.owner_ids)} owners and the manager exceed max_parties="
                f"{params.max_parties}"
            )
    dp = None
    if m.dp_epsilon > 0:
        dp = DPConfig(m.dp_epsilon, m.dp_delta, m.max_iter, m.dp_lower, m.dp_upper)
    max_abs = params.max_value if params is not None else 2**62
    return Session(m, FixedPointEncoder(decimals=m.decimals, max_abs_int=max_abs), dp, params,
                    crs)


def build_joint_key(session: Session, share_blobs: Sequence[bytes],
                    own: PublicShare) -> JointPublicKey:
    """The joint key from the shares the centre relayed, after checking that ``own`` (the
    caller's public share) is among them unchanged."""
    if session.crs is None or session.params is None:
        raise ProtocolError("key shares arrived in a session without threshold keys")
    shares = [PublicShare.from_bytes(b, session.crs) for b in share_blobs]
    mine = [s for s in shares if s.party_id == own.party_id]
    if len(mine) != 1 or not np.array_equal(mine[0].p_hat, own.p_hat):
        raise ProtocolError(
            f"the key shares relayed by the centre do not contain party {own.party_id}'s "
            "share unchanged; refusing the joint key"
        )
    return joint_public_key(session.params, session.crs, shares,
                            expected_party_ids=session.key_party_ids)
