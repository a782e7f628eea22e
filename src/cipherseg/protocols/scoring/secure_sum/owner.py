"""A data owner of the threshold secure sum: encrypts its own vector, partially decrypts the
round's aggregate with its own key share, and learns the round's total.

It holds exactly one :class:`~cipherseg.schemes.threshold_keys.KeyShare` — its own, generated
here from the OS CSPRNG — and decrypts (partially) only the aggregate of a round it
contributed to, once, and only if the manager approved that very ciphertext (the sum of the
contributions every owner committed to). See :mod:`cipherseg.protocols.scoring.secure_sum`
for the sequence.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.protocols.scoring.secure_sum.session import (
    Session,
    build_joint_key,
    check_sender,
    open_session,
)
from cipherseg.schemes.threshold import Ciphertext, JointPublicKey, encrypt
from cipherseg.schemes.threshold_keys import KeyShare


class SecureSumOwner:
    """Owner ``party_id`` (1, 2, …; 0 is the manager) of a secure sum.

    :meth:`contribute` hands it the next vector to sum (the caller's local input, e.g. FedAvg's
    ``n_k·w_k``); :meth:`handle` reads the protocol's messages. :attr:`totals` holds the sums
    the manager announced, by round.
    """

    def __init__(self, party_id: int) -> None:
        if not isinstance(party_id, int) or party_id <= sm.MANAGER_ID:
            raise ParameterError(f"owner party ids are 1, 2, … (0 is the manager's), got "
                                 f"{party_id!r}")
        self.party_id = party_id
        self.name = sm.owner_name(party_id)
        self._session: Session | None = None
        self._key: KeyShare | None = None
        self._pk: JointPublicKey | None = None
        self._ready = False
        self._round = 0  # the last round this owner contributed to
        self._length = 0
        self._decrypted = 0  # the last round whose aggregate it partially decrypted
        self._aggregate: Ciphertext | None = None  # this round's, from the centre
        self._approved = b""  # this round's aggregate digest, as the manager checked it
        self.totals: dict[int, npt.NDArray[np.float64]] = {}
        self.timings: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------------ local input
    def contribute(self, vector: npt.ArrayLike) -> Outgoing:
        """Encrypt ``vector`` under the joint key for the next round: the message to send."""
        session = self._require_session()
        if not self._ready or self._pk is None:
            raise ProtocolError(f"{self.name}: the joint key is not confirmed yet; contribute "
                                "after the manager's Ready")
        if self._round and self._round not in self.totals:
            raise ProtocolError(f"{self.name}: round {self._round}'s total has not arrived; "
                                "one sum at a time")
        v = np.asarray(vector, dtype=np.float64).ravel()
        if v.size == 0:
            raise ValidationError(f"{self.name}: nothing to aggregate (empty vector)")
        start = time.perf_counter()
        limbs = sm.encode(v, session.setup.decimals)
        ct = encrypt(self._pk, limbs)
        ciphertext = ct.to_bytes()
        self.timings["owner: encrypt"] += time.perf_counter() - start
        self._round += 1
        self._length = int(v.size)
        self._aggregate, self._approved = None, b""
        sid = session.setup.session_id
        return [(sm.CENTRE, sm.new_message(sm.Contribution, sid, self._round,
                                           length=self._length, ciphertext=ciphertext)),
                (sm.MANAGER, sm.new_message(sm.ContributionDigest, sid, self._round,
                                            party_id=self.party_id, digest=ct.digest))]

    # ------------------------------------------------------------------ messages
    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, sm.Setup):
            return self._setup(sender, message)
        session = self._require_session()
        if message.session_id != session.setup.session_id:
            raise ProtocolError(f"{self.name}: message for another session")
        if isinstance(message, sm.KeyShares):
            check_sender(self.name, sender, sm.CENTRE, message)
            return self._key_shares(message)
        if isinstance(message, sm.Ready):
            check_sender(self.name, sender, sm.MANAGER, message)
            if self._pk is None:
                raise ProtocolError(f"{self.name}: Ready before the joint key was built")
            self._ready = True
            return []
        if isinstance(message, sm.Aggregate):
            check_sender(self.name, sender, sm.CENTRE, message)
            return self._on_aggregate(message)
        if isinstance(message, sm.Approved):
            check_sender(self.name, sender, sm.MANAGER, message)
            return self._on_approved(message)
        if isinstance(message, sm.Total):
            check_sender(self.name, sender, sm.MANAGER, message)
            return self._total(message)
        raise ProtocolError(f"{self.name} does not accept {type(message).__name__}")

    def _setup(self, sender: str, m: sm.Setup) -> Outgoing:
        check_sender(self.name, sender, sm.MANAGER, m)
        if self._session is not None:
            raise ProtocolError(f"{self.name}: already in session "
                                f"{self._session.setup.session_id!r}")
        session = open_session(m)
        if self.party_id not in session.setup.owner_ids:
            raise ProtocolError(f"{self.name} is not an owner of session {m.session_id}")
        start = time.perf_counter()
        self._key = KeyShare.generate(session.params, session.crs, self.party_id)
        self.timings["owner: key generation"] += time.perf_counter() - start
        self._session = session
        return [(sm.CENTRE, sm.new_message(sm.PublicKeyShare, m.session_id, 0,
                                           party_id=self.party_id,
                                           share=self._key.public_share.to_bytes()))]

    def _key_shares(self, m: sm.KeyShares) -> Outgoing:
        session, key = self._require_session(), self._require_key()
        if self._pk is not None:
            raise ProtocolError(f"{self.name}: the joint key was already built")
        self._pk = build_joint_key(session, m.shares, key.public_share)
        return [(sm.MANAGER, sm.new_message(sm.KeyReady, m.session_id, 0,
                                            party_id=self.party_id,
                                            key_fingerprint=self._pk.fingerprint))]

    def _on_aggregate(self, m: sm.Aggregate) -> Outgoing:
        pk = self._pk
        if pk is None:
            raise ProtocolError(f"{self.name}: an aggregate before the joint key")
        self._check_round(m)
        if self._aggregate is not None:
            raise ProtocolError(f"{self.name}: a second aggregate for round {m.round}")
        if m.length != self._length:
            raise ProtocolError(f"{self.name}: an aggregate of {m.length} values; it "
                                f"contributed {self._length}")
        ct = Ciphertext.from_bytes(m.ciphertext, pk)
        if ct.length != sm.LIMBS * self._length:
            raise ProtocolError(f"{self.name}: the aggregate holds {ct.length} limbs, not "
                                f"{sm.LIMBS * self._length}")
        self._aggregate = ct
        return self._maybe_partial(m.session_id)

    def _on_approved(self, m: sm.Approved) -> Outgoing:
        self._check_round(m)
        if self._approved:
            raise ProtocolError(f"{self.name}: a second approval for round {m.round}")
        self._approved = bytes(m.digest)
        return self._maybe_partial(m.session_id)

    def _check_round(self, m: Message) -> None:
        if m.round != self._round or self._round == 0:
            raise ProtocolError(f"{self.name}: {type(m).__name__} for round {m.round}; it "
                                f"contributed to round {self._round} last")
        if self._decrypted == m.round:
            raise ProtocolError(f"{self.name}: it already decrypted round {m.round}'s aggregate")

    def _maybe_partial(self, session_id: str) -> Outgoing:
        """Decrypt (partially) the centre's aggregate once the manager approved that very
        ciphertext: the sum of the contributions every owner committed to."""
        ct, approved = self._aggregate, self._approved
        if ct is None or not approved:
            return []
        if ct.digest != approved:
            raise ProtocolError(f"{self.name}: the centre's aggregate for round {self._round} is "
                                "not the one the manager checked; refusing to decrypt it")
        start = time.perf_counter()
        partial = self._require_key().partial_decrypt(ct).to_bytes()
        self.timings["owner: partial decrypt"] += time.perf_counter() - start
        self._decrypted = self._round
        self._aggregate, self._approved = None, b""
        return [(sm.MANAGER, sm.new_message(sm.Partial, session_id, self._round,
                                            party_id=self.party_id, partial=partial))]

    def _total(self, m: sm.Total) -> Outgoing:
        if m.round != self._round or m.round in self.totals:
            raise ProtocolError(f"{self.name}: a total for round {m.round}, expected "
                                f"{self._round}")
        if len(m.values) != self._length:
            raise ProtocolError(f"{self.name}: a total of {len(m.values)} values; it "
                                f"contributed {self._length}")
        self.totals[m.round] = np.asarray(m.values, dtype=np.float64)
        return []

    # ------------------------------------------------------------------ helpers
    def _require_session(self) -> Session:
        if self._session is None:
            raise ProtocolError(f"{self.name}: no session (the manager's Setup comes first)")
        return self._session

    def _require_key(self) -> KeyShare:
        if self._key is None:
            raise ProtocolError(f"{self.name}: no key share (the manager's Setup comes first)")
        return self._key

