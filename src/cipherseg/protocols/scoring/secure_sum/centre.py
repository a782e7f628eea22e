"""The compute centre of the threshold secure sum: relays the public key shares and adds the
owners' ciphertexts.

It holds public material only — parameters, the CRS, public shares, ciphertexts — and never
imports :mod:`cipherseg.schemes.threshold_keys` (import-linter contract). It learns the
number of owners, the vector lengths and the timing; every value it handles is encrypted under
a joint key no party holds alone.
"""

from __future__ import annotations

import time
from collections import defaultdict

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.protocols.scoring.secure_sum.session import Session, check_sender, open_session
from cipherseg.schemes.threshold import Ciphertext, JointPublicKey, PublicShare, joint_public_key


class SecureSumCentre:
    """Server side of the secure sum; ``handle(sender, message)`` returns messages to send."""

    name = sm.CENTRE

    def __init__(self) -> None:
        self._session: Session | None = None
        self.public_key: JointPublicKey | None = None
        self._shares: dict[int, bytes] = {}
        self._round = 0  # rounds aggregated
        self._pending: dict[int, tuple[Ciphertext, bytes]] = {}
        self._length = 0
        self.timings: dict[str, float] = defaultdict(float)

    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, sm.Setup):
            check_sender(self.name, sender, sm.MANAGER, message)
            if self._session is not None:
                raise ProtocolError("centre: the session is already open")
            self._session = open_session(message)
            return []
        session = self._session
        if session is None:
            raise ProtocolError("centre: no session (the manager's Setup comes first)")
        if message.session_id != session.setup.session_id:
            raise ProtocolError(f"centre: message for session {message.session_id!r}, the "
                                f"centre is in {session.setup.session_id!r}")
        if isinstance(message, sm.PublicKeyShare):
            return self._key_share(session, sender, message)
        if isinstance(message, sm.Contribution):
            return self._contribution(session, sender, message)
        raise ProtocolError(f"the centre does not accept {type(message).__name__}")

    def _key_share(self, session: Session, sender: str, m: sm.PublicKeyShare) -> Outgoing:
        expected = sm.MANAGER if m.party_id == sm.MANAGER_ID else sm.owner_name(m.party_id)
        if m.party_id not in session.key_party_ids or sender != expected:
            raise ProtocolError(f"{sender} may not send the key share of party {m.party_id}")
        if m.party_id in self._shares:
            raise ProtocolError(f"duplicated key share from party {m.party_id}")
        share = PublicShare.from_bytes(m.share, session.crs)
        if share.party_id != m.party_id:
            raise ProtocolError(f"{sender} sent a key share labelled party {share.party_id}")
        self._shares[m.party_id] = bytes(m.share)
        if len(self._shares) < len(session.key_party_ids):
            return []
        ids = session.key_party_ids
        self.public_key = joint_public_key(
            session.params, session.crs,
            [PublicShare.from_bytes(self._shares[i], session.crs) for i in ids],
            expected_party_ids=ids)
        out = sm.new_message(sm.KeyShares, session.setup.session_id, 0,
                             shares=tuple(self._shares[i] for i in ids))
        return [(sm.MANAGER, out), *((sm.owner_name(i), out) for i in session.setup.owner_ids)]

    def _contribution(self, session: Session, sender: str, m: sm.Contribution) -> Outgoing:
        owner = {sm.owner_name(i): i for i in session.setup.owner_ids}.get(sender)
        if owner is None:
            raise ProtocolError(f"{sender} is not a data owner of this session")
        if self.public_key is None:
            raise ProtocolError("centre: a contribution before the joint key was set up")
        if m.round != self._round + 1:
            raise ProtocolError(f"centre: {sender} contributed to round {m.round}; the open "
                                f"round is {self._round + 1}")
        if owner in self._pending:
            raise ProtocolError(f"{sender} sent two contributions for round {m.round}")
        if m.length < 1 or (self._pending and m.length != self._length):
            raise ProtocolError(f"{sender} contributed {m.length} values; every owner of a "
                                f"round sends the same positive number ({self._length or 'n'})")
        start = time.perf_counter()
        ct = Ciphertext.from_bytes(m.ciphertext, self.public_key)
        if ct.length != sm.LIMBS * m.length:
            raise ProtocolError(f"{sender}'s ciphertext holds {ct.length} limbs, not "
                                f"{sm.LIMBS * m.length}")
        self._pending[owner], self._length = (ct, bytes(m.ciphertext)), m.length
        self.timings["centre: load contributions"] += time.perf_counter() - start
        if len(self._pending) < len(session.setup.owner_ids):
            return []
        start = time.perf_counter()
        ids = session.setup.owner_ids
        parts = [self._pending[i][0] for i in ids]
        total: Ciphertext = sum(parts[1:], parts[0])
        blob = total.to_bytes()
        self.timings["centre: aggregate"] += time.perf_counter() - start
        self._round += 1
        out = sm.new_message(sm.Aggregate, session.setup.session_id, self._round,
                             length=self._length, ciphertext=blob)
        # The manager checks the sum against the contributions the owners committed to.
        checked = sm.new_message(sm.Aggregate, session.setup.session_id, self._round,
                                 length=self._length, ciphertext=blob,
                                 parts=tuple(self._pending[i][1] for i in ids))
        self._pending = {}
        return [(sm.MANAGER, checked), *((sm.owner_name(i), out) for i in ids)]
