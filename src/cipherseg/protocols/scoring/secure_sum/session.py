"""What the key parties of the secure sum (owners and manager) share: opening a session from
its :class:`~.messages.Setup` and building the joint key from the shares the centre relays.

Public material only (parameters, CRS, public shares): no key share is imported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.schemes.threshold import (
    CommonReference,
    JointPublicKey,
    PublicShare,
    ThresholdParams,
    joint_public_key,
    new_crs,
)


@dataclass(frozen=True, slots=True)
class Session:
    """A session's public configuration, as every key party reads it from the set-up."""

    setup: sm.Setup
    params: ThresholdParams
    crs: CommonReference

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        return (sm.MANAGER_ID, *self.setup.owner_ids)


def open_session(m: sm.Setup) -> Session:
    """Check a set-up and derive its parameters and common reference string."""
    if m.protocol_version != sm.VERSION:
        raise ProtocolError(f"secure-sum protocol version {m.protocol_version} is not "
                            f"supported (this party speaks {sm.VERSION})")
    ids = tuple(m.owner_ids)
    if len(ids) < 2 or sm.MANAGER_ID in ids or len(set(ids)) != len(ids):
        raise ProtocolError(f"a secure sum needs two or more distinct owner ids other than "
                            f"{sm.MANAGER_ID} (the manager's), got {list(ids)}")
    if not isinstance(m.decimals, int) or not 0 <= m.decimals <= 12:
        raise ProtocolError(f"decimals must be an integer in [0, 12], got {m.decimals!r}")
    try:
        params = ThresholdParams.from_bytes(m.params)
        if len(ids) + 1 > params.max_parties:
            raise ProtocolError(f"{len(ids)} owners + the manager exceed the "
                                f"{params.max_parties} parties the parameters allow")
        crs = new_crs(params, m.crs_seed)
    except ParameterError as exc:
        raise ProtocolError(f"secure-sum set-up refused: {exc}") from exc
    return Session(m, params, crs)


def build_joint_key(session: Session, share_blobs: Sequence[bytes],
                    own: PublicShare) -> JointPublicKey:
    """The joint key from the relayed shares, refused unless they hold ``own`` unchanged and
    exactly the session's parties."""
    shares = [PublicShare.from_bytes(b, session.crs) for b in share_blobs]
    mine = [s for s in shares if s.party_id == own.party_id]
    if len(mine) != 1 or not np.array_equal(mine[0].p_hat, own.p_hat):
        raise ProtocolError(
            f"the key shares relayed by the centre do not contain party {own.party_id}'s "
            "share unchanged; refusing the joint key"
        )
    return joint_public_key(session.params, session.crs, shares,
                            expected_party_ids=session.key_party_ids)


def check_sender(me: str, sender: str, expected: str, m: Message) -> None:
    """Refuse ``m`` unless it comes from the party the protocol names."""
    if sender != expected:
        raise ProtocolError(f"{me}: {type(m).__name__} comes from the {expected}, not "
                            f"{sender!r}")
