"""The manager of the threshold secure sum (party id 0, as in protocol 4.2): opens the session,
confirms that every party built the same joint key, checks each round's aggregate against the
contributions the owners committed to before anyone decrypts it, fuses the partial decryptions
and announces the total.

It holds exactly one key share — its own — and learns each round's total (FedAvg: the
pooled moments, then per round ``Σ n_k w_k`` and ``Σ n_k``), never one owner's vector: fusing
needs every owner's partial decryption of the aggregate. See
:mod:`cipherseg.protocols.scoring.secure_sum` for the sequence.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.protocols.scoring.secure_sum import messages as sm
from cipherseg.protocols.scoring.secure_sum.session import (
    Session,
    build_joint_key,
    check_sender,
    open_session,
)
from cipherseg.schemes.threshold import (
    Ciphertext,
    JointPublicKey,
    PartialDecryption,
    ThresholdParams,
    fuse,
)
from cipherseg.schemes.threshold_keys import KeyShare


class SecureSumManager:
    """Manager of a secure sum over the owners ``owner_ids`` (1, 2, …).

    ``crs_seed`` (16 to 1024 bytes) fixes the common reference string, for reproducible runs
    only; by default it comes from the OS CSPRNG. Key shares always do.
    """

    name = sm.MANAGER
    party_id = sm.MANAGER_ID

    def __init__(self, owner_ids: Sequence[int], *, decimals: int = 6,
                 params: ThresholdParams | None = None, crs_seed: bytes | None = None,
                 session_id: str | None = None) -> None:
        ids = tuple(owner_ids)
        if len(ids) < 2:
            raise ParameterError(f"secure aggregation needs at least 2 owners, got {len(ids)}")
        params = params or ThresholdParams()
        if len(ids) + 1 > params.max_parties:
            raise ParameterError(
                f"{len(ids)} owners + the manager exceed the {params.max_parties} parties the "
                "threshold parameters allow"
            )
        FixedPointEncoder(decimals)  # validates decimals
        self.owner_ids = ids
        self.decimals = decimals
        self._setup = sm.new_message(
            sm.Setup, session_id or uuid.uuid4().hex, 0, params=params.to_bytes(),
            crs_seed=crs_seed if crs_seed is not None else secrets.token_bytes(32),
            owner_ids=ids, decimals=decimals)
        self._session: Session | None = None
        self._key: KeyShare | None = None
        self._pk: JointPublicKey | None = None
        self._fingerprints: dict[int, bytes] = {}
        self.ready = False
        self._round = 0  # rounds whose total is out
        self._aggregate: Ciphertext | None = None
        self._length = 0
        self._partials: dict[int, PartialDecryption] = {}
        self._committed: dict[int, bytes] = {}  # owner → digest of its contribution
        self.totals: dict[int, npt.NDArray[np.float64]] = {}
        self.timings: dict[str, float] = defaultdict(float)

    @property
    def session_id(self) -> str:
        return str(self._setup.session_id)

    @property
    def public_key(self) -> JointPublicKey | None:
        return self._pk

    def start(self) -> Outgoing:
        """Open the session: the set-up to everyone, then the manager's own public share."""
        if self._session is not None:
            raise ProtocolError("manager: the session is already open")
        session = open_session(self._setup)
        start = time.perf_counter()
        self._key = KeyShare.generate(session.params, session.crs, sm.MANAGER_ID)
        self.timings["manager: key generation"] += time.perf_counter() - start
        self._session = session
        share = sm.new_message(sm.PublicKeyShare, self.session_id, 0, party_id=sm.MANAGER_ID,
                               share=self._key.public_share.to_bytes())
        out: Outgoing = [(sm.CENTRE, self._setup)]
        out += [(sm.owner_name(i), self._setup) for i in self.owner_ids]
        out.append((sm.CENTRE, share))
        return out

    def handle(self, sender: str, message: Message) -> Outgoing:
        session = self._session
        if session is None:
            raise ProtocolError("manager: no session (call start first)")
        if message.session_id != self.session_id:
            raise ProtocolError("manager: message for another session")
        if isinstance(message, sm.KeyShares):
            check_sender(self.name, sender, sm.CENTRE, message)
            return self._key_shares(session, message)
        if isinstance(message, sm.KeyReady):
            return self._key_ready(sender, message)
        if isinstance(message, sm.ContributionDigest):
            return self._on_digest(sender, message)
        if isinstance(message, sm.Aggregate):
            check_sender(self.name, sender, sm.CENTRE, message)
            return self._on_aggregate(message)
        if isinstance(message, sm.Partial):
            return self._on_partial(sender, message)
        raise ProtocolError(f"manager does not accept {type(message).__name__}")

    # ------------------------------------------------------------------ keys
    def _key_shares(self, session: Session, m: sm.KeyShares) -> Outgoing:
        if self._key is None or self._pk is not None:
            raise ProtocolError("manager: key shares out of turn")
        self._pk = build_joint_key(session, m.shares, self._key.public_share)
        self._fingerprints[sm.MANAGER_ID] = self._pk.fingerprint
        return self._maybe_ready()

    def _key_ready(self, sender: str, m: sm.KeyReady) -> Outgoing:
        if m.party_id not in self.owner_ids or sender != sm.owner_name(m.party_id):
            raise ProtocolError(f"{sender} may not report party {m.party_id}'s joint key")
        if m.party_id in self._fingerprints:
            raise ProtocolError(f"duplicated KeyReady from party {m.party_id}")
        self._fingerprints[m.party_id] = bytes(m.key_fingerprint)
        return self._maybe_ready()

    def _maybe_ready(self) -> Outgoing:
        if self.ready or len(self._fingerprints) < len(self.owner_ids) + 1:
            return []
        if sm.MANAGER_ID not in self._fingerprints:
            return []
        if len(set(self._fingerprints.values())) != 1:
            raise ProtocolError("the parties built different joint keys (the centre relayed "
                                "different shares); stopping before anything is encrypted")
        self.ready = True
        ready = sm.new_message(sm.Ready, self.session_id, 0)
        return [(sm.owner_name(i), ready) for i in self.owner_ids]

    # ------------------------------------------------------------------ sums
    def _on_digest(self, sender: str, m: sm.ContributionDigest) -> Outgoing:
        if m.party_id not in self.owner_ids or sender != sm.owner_name(m.party_id):
            raise ProtocolError(f"{sender} may not commit party {m.party_id}'s contribution")
        if m.round != self._round + 1:
            raise ProtocolError(f"manager: a contribution digest for round {m.round}; expected "
                                f"round {self._round + 1}")
        if m.party_id in self._committed:
            raise ProtocolError(f"duplicated contribution digest from party {m.party_id}")
        self._committed[m.party_id] = bytes(m.digest)
        return []

    def _on_aggregate(self, m: sm.Aggregate) -> Outgoing:
        if not self.ready or self._pk is None or self._key is None:
            raise ProtocolError("manager: an aggregate before every party confirmed the key")
        if m.round != self._round + 1 or self._aggregate is not None:
            raise ProtocolError(f"manager: an aggregate for round {m.round}; expected round "
                                f"{self._round + 1}, once")
        if len(self._committed) < len(self.owner_ids):
            raise NotReady("manager: not every owner has committed to its contribution yet")
        if m.length < 1:
            raise ProtocolError("manager: an aggregate of no values")
        start = time.perf_counter()
        ct = Ciphertext.from_bytes(m.ciphertext, self._pk)
        if ct.length != sm.LIMBS * m.length:
            raise ProtocolError(f"manager: the aggregate holds {ct.length} limbs, not "
                                f"{sm.LIMBS * m.length}")
        self._check_sum(ct, m.parts)
        self.timings["manager: check the sum"] += time.perf_counter() - start
        stray = sorted(i for i, p in self._partials.items() if p.ciphertext_digest != ct.digest)
        if stray:  # partials that came before the aggregate must be of this aggregate
            raise ProtocolError(f"partial decryptions of another ciphertext from parties {stray}")
        start = time.perf_counter()
        self._partials[sm.MANAGER_ID] = self._key.partial_decrypt(ct)
        self.timings["manager: partial decrypt"] += time.perf_counter() - start
        self._aggregate, self._length = ct, m.length
        approved = sm.new_message(sm.Approved, self.session_id, m.round, digest=ct.digest)
        return [(sm.owner_name(i), approved) for i in self.owner_ids] + self._maybe_fuse()

    def _check_sum(self, aggregate: Ciphertext, parts: Sequence[bytes]) -> None:
        """The aggregate must be the sum of exactly the ciphertexts the owners committed to:
        otherwise a centre could pass one owner's vector off as the round's sum."""
        assert self._pk is not None
        if len(parts) != len(self.owner_ids):
            raise ProtocolError(f"manager: the aggregate comes with {len(parts)} contributions, "
                                f"not {len(self.owner_ids)}")
        cts = [Ciphertext.from_bytes(b, self._pk) for b in parts]
        for i, ct in zip(self.owner_ids, cts, strict=True):
            if ct.digest != self._committed[i]:
                raise ProtocolError(f"manager: the contribution of party {i} is not the one it "
                                    "committed to; nothing is decrypted this round")
        if sum(cts[1:], cts[0]).digest != aggregate.digest:
            raise ProtocolError("manager: the aggregate is not the sum of the committed "
                                "contributions; nothing is decrypted this round")

    def _on_partial(self, sender: str, m: sm.Partial) -> Outgoing:
        if self._pk is None:
            raise ProtocolError("manager: a partial decryption before the joint key")
        if m.party_id not in self.owner_ids or sender != sm.owner_name(m.party_id):
            raise ProtocolError(f"{sender} may not send party {m.party_id}'s partial decryption")
        if m.round != self._round + 1:
            raise ProtocolError(f"manager: a partial decryption for round {m.round}; expected "
                                f"round {self._round + 1}")
        if m.party_id in self._partials:
            raise ProtocolError(f"duplicated partial decryption from party {m.party_id}")
        partial = PartialDecryption.from_bytes(m.partial, self._pk)
        if partial.party_id != m.party_id:
            raise ProtocolError(f"{sender} sent a partial decryption labelled party "
                                f"{partial.party_id}")
        if self._aggregate is not None and partial.ciphertext_digest != self._aggregate.digest:
            raise ProtocolError(f"{sender} partially decrypted another ciphertext than the "
                                "round's aggregate")
        self._partials[m.party_id] = partial
        return self._maybe_fuse()

    def _maybe_fuse(self) -> Outgoing:
        ct = self._aggregate
        if ct is None or len(self._partials) < len(self.owner_ids) + 1:
            return []
        start = time.perf_counter()
        limbs = fuse(ct, self._partials.values())  # refuses partials of another ciphertext
        values = sm.decode(limbs, self._length, self.decimals)
        self.timings["manager: fuse"] += time.perf_counter() - start
        self._round += 1
        self.totals[self._round] = values
        self._aggregate, self._partials, self._committed = None, {}, {}
        total = sm.new_message(sm.Total, self.session_id, self._round,
                               values=tuple(float(v) for v in values))
        return [(sm.owner_name(i), total) for i in self.owner_ids]
