"""The compute centre of protocol 4.2: relays key commitments, key shares and the owners'
ciphertexts (every key party adds the contributions itself and checks them against the
digests their owners reported to the manager, so the centre cannot substitute a ciphertext).

It holds public material only — the session's aggregation scheme (parameters, CRS, joint
public key), public key shares, ciphertexts — and imports the public side of the schemes but
never :mod:`cipherseg.schemes.threshold_keys` (import-linter contract). It sees no plaintext value:
every contribution is encrypted under a joint key no party holds alone, and the aggregate is
decrypted by the key parties, not by the centre. See :mod:`cipherseg.protocols.joint`
for the whole sequence and the leakage table.

What the centre C does, message by message::

    Setup (M)              opens the session (one per centre object)
    KeyCommitment (all)    one per key party → KeyCommitments (key parties)
    PublicKeyShare (all)   only after every commitment; opens its commitment → KeyShares
    EncryptedVector (O_i)  one per owner, round and purpose, of the round's length; when all
                           are in → Aggregate(ct_1…ct_n) (the manager and key-holding owners)
    Close (M)              done

It learns the public schedule: number of owners, k, d, iterations, sizes and timing.

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
from cipherseg.protocols.joint.session import (
    Session,
    expected_length,
    key_commitment,
    open_session,
)
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing


class JointCentre:
    """Server side of protocol 4.2; ``handle(sender, message)`` returns messages to send."""

    name = jm.CENTRE

    def __init__(self) -> None:
        self.session_id = ""
        self.owner_ids: tuple[int, ...] = ()
        self.session: Session | None = None
        self._commitments: dict[int, bytes] = {}
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
        if isinstance(message, jm.KeyCommitment):
            return self._key_commitment(sender, message)
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

    def _check_key_party(self, sender: str, party_id: int, what: str) -> None:
        scheme = self._require_session().scheme
        if not scheme.key_party_ids:
            raise ProtocolError(f"a {what} arrived in a session without keys")
        expected = jm.MANAGER if party_id == jm.MANAGER_ID else jm.owner_name(party_id)
        if party_id not in scheme.key_party_ids or sender != expected:
            raise ProtocolError(f"{sender} may not send the {what} of party {party_id}")

    def _key_commitment(self, sender: str, m: jm.KeyCommitment) -> Outgoing:
        """Collect every key party's commitment; only then are shares revealed."""
        self._check_key_party(sender, m.party_id, "key share commitment")
        if m.party_id in self._commitments:
            raise ProtocolError(f"duplicated key share commitment from party {m.party_id}")
        if len(m.commitment) != 32:
            raise ProtocolError(f"a key share commitment is 32 bytes, got {len(m.commitment)}")
        self._commitments[m.party_id] = m.commitment
        ids = self._require_session().scheme.key_party_ids
        if len(self._commitments) < len(ids):
            return []
        out = jm.KeyCommitments(protocol_version=jm.VERSION, session_id=self.session_id,
                                round=0, commitments=tuple(self._commitments[i] for i in ids))
        return [(name, out) for name in self._recipients()]

    def _key_share(self, sender: str, m: jm.PublicKeyShare) -> Outgoing:
        self._check_key_party(sender, m.party_id, "key share")
        scheme = self._require_session().scheme
        if len(self._commitments) < len(scheme.key_party_ids):
            raise ProtocolError(f"{sender} revealed a key share before every party committed")
        if m.party_id in self._shares:
            raise ProtocolError(f"duplicated key share from party {m.party_id}")
        if key_commitment(self.session_id, m.party_id, m.share) != \
                self._commitments[m.party_id]:
            raise ProtocolError(f"party {m.party_id}'s key share does not open its commitment")
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
        length = scheme.length(scheme.load(m.ciphertext))
        self.timings["centre: load contributions"] += time.perf_counter() - start
        if length != expected_length(self._require_session(), m.purpose):
            raise ProtocolError(f"{sender}'s {m.purpose!r} contribution holds {length} values")
        pending[owner] = m.ciphertext
        if len(pending) < len(self.owner_ids):
            return []
        del self._pending[(m.round, m.purpose)]
        out = jm.Aggregate(protocol_version=jm.VERSION, session_id=self.session_id,
                           round=m.round, purpose=m.purpose,
                           contributions=tuple(pending[i] for i in self.owner_ids))
        return [(name, out) for name in self._recipients()]
