"""The compute centre of protocol 4.2: relays key shares and adds the owners' ciphertexts.

It holds public material only — parameters, the CRS, public key shares, ciphertexts — and
imports :mod:`cipherseg.schemes.threshold` (public side) but never
:mod:`cipherseg.schemes.threshold_keys` (import-linter contract). It sees no plaintext value:
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

import numpy as np

from cipherseg.errors import ProtocolError
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.session import plain_from_bytes, plain_to_bytes
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.schemes.threshold import (
    Ciphertext,
    CommonReference,
    JointPublicKey,
    PublicShare,
    ThresholdParams,
    joint_public_key,
    new_crs,
)


class JointCentre:
    """Server side of protocol 4.2; ``handle(sender, message)`` returns messages to send."""

    name = jm.CENTRE

    def __init__(self) -> None:
        self.session_id = ""
        self.mode = "threshold"
        self.owner_ids: tuple[int, ...] = ()
        self.crs: CommonReference | None = None
        self.public_key: JointPublicKey | None = None
        self._shares: dict[int, bytes] = {}
        self._pending: dict[tuple[int, str], dict[int, Any]] = defaultdict(dict)
        self.timings: dict[str, float] = defaultdict(float)
        self.closed = False

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        return (jm.MANAGER_ID, *self.owner_ids)

    def _recipients(self) -> list[str]:
        if self.mode == "plain":
            return [jm.MANAGER]
        return [jm.MANAGER, *(jm.owner_name(i) for i in self.owner_ids)]

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
        if m.mode not in jm.MODES:
            raise ProtocolError(f"unknown mode {m.mode!r}")
        self.session_id = m.session_id
        self.mode = m.mode
        self.owner_ids = tuple(m.owner_ids)
        if m.mode == "threshold":
            self.crs = new_crs(ThresholdParams.from_bytes(m.params), m.crs_seed)
        return []

    def _key_share(self, sender: str, m: jm.PublicKeyShare) -> Outgoing:
        if self.crs is None:
            raise ProtocolError("a key share arrived in a session without threshold keys")
        expected = jm.MANAGER if m.party_id == jm.MANAGER_ID else jm.owner_name(m.party_id)
        if m.party_id not in self.key_party_ids or sender != expected:
            raise ProtocolError(f"{sender} may not send the key share of party {m.party_id}")
        if m.party_id in self._shares:
            raise ProtocolError(f"duplicated key share from party {m.party_id}")
        share = PublicShare.from_bytes(m.share, self.crs)
        if share.party_id != m.party_id:
            raise ProtocolError(f"{sender} sent a key share labelled party {share.party_id}")
        self._shares[m.party_id] = m.share
        if len(self._shares) < len(self.key_party_ids):
            return []
        shares = [PublicShare.from_bytes(self._shares[i], self.crs) for i in self.key_party_ids]
        self.public_key = joint_public_key(self.crs.params, self.crs, shares,
                                           expected_party_ids=self.key_party_ids)
        out = jm.KeyShares(protocol_version=jm.VERSION, session_id=self.session_id, round=0,
                           shares=tuple(self._shares[i] for i in self.key_party_ids))
        return [(name, out) for name in self._recipients()]

    def _contribution(self, sender: str, m: jm.EncryptedVector) -> Outgoing:
        owner = {jm.owner_name(i): i for i in self.owner_ids}.get(sender)
        if owner is None:
            raise ProtocolError(f"{sender} is not a data owner of this session")
        if m.purpose not in jm.PURPOSES:
            raise ProtocolError(f"unknown purpose {m.purpose!r}")
        pending = self._pending[(m.round, m.purpose)]
        if owner in pending:
            raise ProtocolError(f"{sender} sent two contributions for round {m.round}")
        start = time.perf_counter()
        if self.mode == "threshold":
            if self.public_key is None:
                raise ProtocolError("a contribution arrived before the joint key was set up")
            pending[owner] = Ciphertext.from_bytes(m.ciphertext, self.public_key)
        else:
            pending[owner] = plain_from_bytes(m.ciphertext)
        self.timings["centre: load contributions"] += time.perf_counter() - start
        if len(pending) < len(self.owner_ids):
            return []
        start = time.perf_counter()
        del self._pending[(m.round, m.purpose)]
        parts = [pending[i] for i in self.owner_ids]
        if self.mode == "threshold":
            total: Ciphertext = sum(parts[1:], parts[0])
            blob = total.to_bytes()
        else:
            blob = plain_to_bytes(np.sum(parts, axis=0))
        self.timings["centre: aggregate"] += time.perf_counter() - start
        out = jm.Aggregate(protocol_version=jm.VERSION, session_id=self.session_id,
                           round=m.round, purpose=m.purpose, ciphertext=blob)
        return [(name, out) for name in self._recipients()]

