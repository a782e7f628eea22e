"""The compute centre of protocol 4.2: relays key shares and adds the owners' ciphertexts.

It holds public material only — the session's aggregation scheme (parameters, CRS, joint
public key), public key shares, ciphertexts — and imports the public side of the schemes but
never :mod:`cipherseg.schemes.threshold_keys` (import-linter contract). It sees no plaintext value:
every contribution is encrypted under a joint key no party holds alone, and the aggregate is
decrypted by the key parties, not by the centre. See :mod:`cipherseg.protocols.joint`
for the whole sequence and the leakage table.

>>> JointCentre().handle("manager", jm.Close(protocol_version=1, session_id="s", round=0))
Traceback (most recent call last):
...
cipherseg.protocols.party.NotReady: no session is set up yet
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from cipherseg.errors import ProtocolError
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.session import Session, open_session
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing


class JointCentre:
    """Server side of protocol 4.2; ``handle(sender, message)`` returns messages to send."""

    name = jm.CENTRE

    def __init__(self) -> None:
        self.session_id = ""
        self.owner_ids: tuple[int, ...] = ()
        self.session: Session | None = None
        self._shares: dict[int, bytes] = {}
        self._pending: dict[tuple[int, str], dict[int, Any]] = defaultdict(dict)
        self.timings: dict[str, float] = defaultdict(float)
        self.closed = False

    def _require_session(self) -> Session:
        if self.session is None:
            raise ProtocolError("the centre has no session")
        return self.session

    def _recipients(self) -> list[str]:
        """Who decrypts an aggregate: the manager, and every owner holding a key share."""
        keyed = self._require_session().scheme.key_party_ids
        return [jm.MANAGER, *(jm.owner_name(i) for i in self.owner_ids if i in keyed)]

    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, jm.Setup):
            return self._setup(sender, message)
        if not self.session_id:
            # Transports do not order messages from different senders (a process runner's
            # queue may hand over an owner's key share before the manager's Setup): defer.
            raise NotReady("no session is set up yet")
        if message.session_id != self.session_id:
            raise ProtocolError(
                f"message for session {message.session_id!r}, the centre is in "
                f"{self.session_id!r}"
            )
        if isinstance(message, jm.PublicKeyShare):
            return self._key_share(sender, message)
        if isinstance(message, jm.EncryptedVector):
            return self._contribution(sender, message)
        if isinstance(message, jm.Close):
            self.closed = True
            return []
        raise ProtocolError(f"the centre does not accept {type(message).__name__}")

    def _setup(self, sender: str, m: jm.Setup) -> Outgoing:
        if sender != jm.MANAGER:
            raise ProtocolError("only the manager may open a session")
        if self.session_id:
            raise ProtocolError(f"the centre is already in session {self.session_id!r}")
        self.session = open_session(m)
        self.session_id = m.session_id
        self.owner_ids = tuple(m.owner_ids)
        return []

    def _key_share(self, sender: str, m: jm.PublicKeyShare) -> Outgoing:
        scheme = self._require_session().scheme
        if not scheme.key_party_ids:
            raise ProtocolError("a key share arrived in a session without keys")
        expected = jm.MANAGER if m.party_id == jm.MANAGER_ID else jm.owner_name(m.party_id)
        if m.party_id not in scheme.key_party_ids or sender != expected:
            raise ProtocolError(f"{sender} may not send the key share of party {m.party_id}")
        if m.party_id in self._shares:
            raise ProtocolError(f"duplicated key share from party {m.party_id}")
        scheme.public_share_from_bytes(m.share, m.party_id)
        self._shares[m.party_id] = m.share
        if len(self._shares) < len(scheme.key_party_ids):
            return []
        shares = tuple(self._shares[i] for i in scheme.key_party_ids)
        scheme.set_joint_key(shares)
        out = jm.KeyShares(protocol_version=jm.VERSION, session_id=self.session_id, round=0,
                           shares=shares)
        return [(name, out) for name in self._recipients()]

    def _contribution(self, sender: str, m: jm.EncryptedVector) -> Outgoing:
        scheme = self._require_session().scheme
        owner = {jm.owner_name(i): i for i in self.owner_ids}.get(sender)
        if owner is None:
            raise ProtocolError(f"{sender} is not a data owner of this session")
        if m.purpose not in jm.PURPOSES:
            raise ProtocolError(f"unknown purpose {m.purpose!r}")
        pending = self._pending[(m.round, m.purpose)]
        if owner in pending:
            raise ProtocolError(f"{sender} sent two contributions for round {m.round}")
        if scheme.key_fingerprint is None:
            raise ProtocolError("a contribution arrived before the joint key was set up")
        start = time.perf_counter()
        pending[owner] = scheme.load(m.ciphertext)
        self.timings["centre: load contributions"] += time.perf_counter() - start
        if len(pending) < len(self.owner_ids):
            return []
        start = time.perf_counter()
        del self._pending[(m.round, m.purpose)]
        blob = scheme.aggregate([pending[i] for i in self.owner_ids])
        self.timings["centre: aggregate"] += time.perf_counter() - start
        out = jm.Aggregate(protocol_version=jm.VERSION, session_id=self.session_id,
                           round=m.round, purpose=m.purpose, ciphertext=blob)
        return [(name, out) for name in self._recipients()]
