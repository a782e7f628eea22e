"""Protocol 4.2 (joint k-means): the manager's side — opens the session, holds a key share,
relays the owners' contribution digests, fuses partial decryptions, releases centroids (the
whole sequence and the leakage table: :mod:`cipherseg.protocols.joint`).

What the manager M does, message by message::

    start                  Setup (C, every O_i); its key share s_0 → KeyCommitment (C)
    KeyCommitments (C)     its own unchanged, one per key party → PublicKeyShare (C)
    KeyShares (C)          every p_j opens its commitment, its own unchanged → pk
    KeyReady (O_i)         every owner built the same pk → first D2Request or Centroids
    ContributionDigest     one per owner and round → ContributionDigests (key-holding owners)
      (O_i)
    Aggregate (C)          ct_1…ct_n checked against the digests and the round's length,
                           added; its own partial decryption
    Partial (O_i)          with every key party's partial: fuse (noise-checked) →
                           k-means++: sample an owner ∝ D²_i → PickRequest; Lloyd: new
                           centroids → Centroids, or Final (O_i) and Close (C)
    PickedRecord (O_i)     the next initial centre → D2Request, or the first Centroids

What it learns: per iteration the pooled per-cluster sums and counts (the centroids and
cluster sizes it releases); during k-means++ every owner's D² total, which owner each initial
centre comes from and the k initial records (:class:`ManagerLog` keeps all of it).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ProtocolError
from cipherseg.protocols.dp import DPConfig, data_independent_centres
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.session import (
    D2_SLOTS,
    INITS,
    Session,
    build_joint_key,
    check_commitments,
    choice_source,
    decode_total,
    generator_from,
    key_commitment,
    new_message,
    new_scheme,
    open_contributions,
    open_session,
)
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.schemes.base import DecryptionShare
from cipherseg.schemes.threshold import ThresholdParams
from cipherseg.schemes.threshold_keys import KeyShare


@dataclass
class ManagerLog:
    """What the manager learned and released, iteration by iteration (for audits and docs)."""

    d2_totals: list[list[float]] = field(default_factory=list)
    sampled_owners: list[int] = field(default_factory=list)
    aggregates: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = field(
        default_factory=list)
    released: list[npt.NDArray[np.float64]] = field(default_factory=list)


class JointManager:
    """The manager: opens the session, holds a key share, fuses decryptions, releases the model.

    Parameters mirror :class:`JointKMeans`; ``init_centres`` are public centres for
    ``init="given"``.
    """

    name = jm.MANAGER

    def __init__(
        self,
        owner_ids: Sequence[int],
        n_features: int,
        n_clusters: int,
        *,
        params: ThresholdParams | None = None,
        mode: str = "threshold",
        init: str = "k-means++",
        init_centres: npt.ArrayLike | None = None,
        max_iter: int = 100,
        tol: float = 0.0,
        decimals: int = 2,
        dp: DPConfig | None = None,
        random_state: int | None = None,
        session_id: str | None = None,
    ) -> None:
        self.owner_ids = tuple(int(i) for i in owner_ids)
        if not self.owner_ids or len(set(self.owner_ids)) != len(self.owner_ids) or \
                jm.MANAGER_ID in self.owner_ids:
            raise ParameterError("owner ids must be distinct, non-empty and not 0 (the manager)")
        if mode not in jm.MODES:
            raise ParameterError(f"mode must be one of {jm.MODES}, got {mode!r}")
        if init not in INITS:
            raise ParameterError(f"init must be one of {INITS} or an array, got {init!r}")
        if n_clusters < 1 or n_features < 1 or max_iter < 1 or tol < 0:
            raise ParameterError("need n_clusters >= 1, n_features >= 1, max_iter >= 1, tol >= 0")
        if dp is not None:
            if init == "k-means++":
                raise ParameterError(
                    "k-means++ releases k customers' records exactly, which no DP budget "
                    "covers; use init='random' (data-independent) or public init centres"
                )
            if dp.n_features != n_features or dp.releases != max_iter:
                raise ParameterError("the DP budget must cover n_features and max_iter releases")
        if init == "random" and dp is None:
            raise ParameterError("init='random' draws centres in the DP bounds; pass a DPConfig")
        self.mode = mode
        self.params = params or ThresholdParams()
        self.n_clusters, self.n_features = n_clusters, n_features
        self.init, self.max_iter, self.tol, self.decimals = init, max_iter, tol, decimals
        self.dp = dp
        self._init_centres = None if init_centres is None else np.asarray(
            init_centres, dtype=np.float64).reshape(n_clusters, n_features)
        if init == "given" and self._init_centres is None:
            raise ParameterError("init='given' needs init_centres")
        self._random_state = random_state
        self._source = choice_source(random_state, "manager")
        self._rng = generator_from(self._source)
        self.session_id = session_id or uuid.uuid4().hex
        self._crs_seed = secrets.token_bytes(32)  # public, fresh per session
        self._session: Session | None = None
        self._key: DecryptionShare | None = None
        self._commitments: tuple[bytes, ...] | None = None
        self._digests: dict[int, bytes] = {}  # this round's contribution digests, by owner
        self._ready: dict[int, bytes] = {}
        self._round = 0
        self._purpose = ""
        self._aggregate: Any = None  # the round's aggregate, loaded by the scheme
        self._partials: dict[int, Any] = {}
        self._centres_int: list[tuple[int, ...]] = []
        self._sampled_owner: int | None = None
        self.centroids_: npt.NDArray[np.float64] | None = None
        self.init_centres_: npt.NDArray[np.float64] | None = None
        self.n_iter_ = 0
        self.log = ManagerLog()
        self.timings: dict[str, float] = defaultdict(float)
        self.stage_marks: dict[str, float] = {}
        self.done = False

    def progress_state(self) -> tuple[str, int, int]:
        """(stage, done, total) for progress bars: centres picked, then iterations run."""
        if "iterations" in self.stage_marks:
            return "iterations", self.n_iter_, self.max_iter
        if "init" in self.stage_marks:
            return "init", len(self._centres_int), self.n_clusters
        return "keygen", len(self._ready), len(self.owner_ids)

    # ------------------------------------------------------------------ start
    def start(self) -> Outgoing:
        """Open the session: Setup to everyone, and the manager's own key share."""
        self.stage_marks["keygen"] = time.perf_counter()
        dp = self.dp
        scheme = new_scheme(self.mode, self.params.to_bytes(), self._crs_seed,
                            (jm.MANAGER_ID, *self.owner_ids))
        params, crs_seed = scheme.public_parameters()
        setup = new_message(
            jm.Setup, self.session_id, 0, mode=self.mode, params=params, crs_seed=crs_seed,
            owner_ids=self.owner_ids, n_clusters=self.n_clusters, n_features=self.n_features,
            decimals=self.decimals, init=self.init, max_iter=self.max_iter, tol=self.tol,
            dp_epsilon=dp.epsilon if dp else 0.0, dp_delta=dp.delta if dp else 0.0,
            dp_lower=dp.lower if dp else (), dp_upper=dp.upper if dp else (),
        )
        self._session = open_session(setup, scheme)
        out: Outgoing = [(jm.CENTRE, setup)]
        out += [(jm.owner_name(i), setup) for i in self.owner_ids]
        if jm.MANAGER_ID in scheme.key_party_ids:
            start = time.perf_counter()
            self._key = KeyShare.for_scheme(scheme, jm.MANAGER_ID)
            commitment = key_commitment(self.session_id, jm.MANAGER_ID,
                                        self._key.public_share_bytes())
            out.append((jm.CENTRE, new_message(jm.KeyCommitment, self.session_id, 0,
                                               party_id=jm.MANAGER_ID, commitment=commitment)))
            self.timings["manager: key generation"] += time.perf_counter() - start
        return out

    # ------------------------------------------------------------------ dispatch
    def handle(self, sender: str, message: Message) -> Outgoing:
        session = self._session
        if session is None:
            raise ProtocolError("the manager has not started a session")
        if message.session_id != self.session_id:
            raise ProtocolError("manager: message for another session")
        if isinstance(message, (jm.KeyCommitments, jm.KeyShares)):
            if sender != jm.CENTRE:
                raise ProtocolError(f"manager: {type(message).__name__} comes from the centre")
            if self._key is None:
                raise ProtocolError("manager: key material in a session without keys")
            share = self._key.public_share_bytes()
            if isinstance(message, jm.KeyCommitments):
                if self._commitments is not None:
                    raise ProtocolError("manager: key commitments relayed twice")
                self._commitments = check_commitments(session, message.commitments, share,
                                                      jm.MANAGER_ID)
                return [(jm.CENTRE, new_message(jm.PublicKeyShare, self.session_id, 0,
                                                party_id=jm.MANAGER_ID, share=share))]
            if self._commitments is None or session.scheme.key_fingerprint is not None:
                raise ProtocolError("manager: key shares before the commitments, or twice")
            start = time.perf_counter()
            build_joint_key(session, message.shares, share, jm.MANAGER_ID, self._commitments)
            self.timings["manager: key generation"] += time.perf_counter() - start
            return self._maybe_begin()
        if isinstance(message, jm.KeyReady):
            return self._key_ready(sender, message)
        if isinstance(message, jm.ContributionDigest):
            return self._on_digest(sender, message)
        if isinstance(message, jm.Aggregate):
            return self._on_aggregate(sender, message)
        if isinstance(message, jm.Partial):
            return self._on_partial(sender, message)
        if isinstance(message, jm.PickedRecord):
            return self._on_record(sender, message)
        raise ProtocolError(f"the manager does not accept {type(message).__name__}")

    def _key_ready(self, sender: str, m: jm.KeyReady) -> Outgoing:
        if sender != jm.owner_name(m.party_id) or m.party_id not in self.owner_ids:
            raise ProtocolError(f"{sender} may not report key readiness for party {m.party_id}")
        if m.party_id in self._ready:
            raise ProtocolError(f"{sender} reported its key twice")
        self._ready[m.party_id] = m.key_fingerprint
        return self._maybe_begin()

    def _maybe_begin(self) -> Outgoing:
        if len(self._ready) < len(self.owner_ids):
            return []
        fingerprint = self._require_session().scheme.key_fingerprint
        if fingerprint is None:  # the manager's own KeyShares has not arrived yet
            return []
        odd = [i for i, fp in self._ready.items() if fp != fingerprint]
        if odd:
            raise ProtocolError(
                f"owners {sorted(odd)} built a different joint key: the centre relayed "
                "inconsistent key shares; aborting"
            )
        self.stage_marks["init"] = time.perf_counter()
        if self.init == "k-means++":
            return self._request_d2(0)
        if self.init == "random":
            assert self.dp is not None  # checked in __init__
            centres = data_independent_centres(self.n_clusters, self.dp.lower, self.dp.upper,
                                               self._rng)
        else:
            assert self._init_centres is not None
            centres = self._init_centres
        return self._begin_lloyd(centres)

    def _next_round(self) -> int:
        self._round += 1
        self._partials = {}
        self._digests = {}
        self._aggregate = None
        return self._round

    def _request_d2(self, step: int) -> Outgoing:
        r = self._next_round()
        self._purpose = "d2"
        flat = tuple(v for c in self._centres_int for v in c)
        msg = new_message(jm.D2Request, self.session_id, r, step=step, centres=flat)
        return [(jm.owner_name(i), msg) for i in self.owner_ids]

    def _begin_lloyd(self, centres: npt.NDArray[np.float64]) -> Outgoing:
        self.init_centres_ = np.array(centres, dtype=np.float64)
        self.centroids_ = self.init_centres_.copy()
        self.stage_marks["iterations"] = time.perf_counter()
        return self._send_centroids()

    def _send_centroids(self) -> Outgoing:
        assert self.centroids_ is not None
        r = self._next_round()
        self._purpose = "stats"
        self.log.released.append(self.centroids_.copy())
        msg = new_message(jm.Centroids, self.session_id, r, iteration=self.n_iter_,
                   centroids=tuple(float(v) for v in self.centroids_.ravel()))
        return [(jm.owner_name(i), msg) for i in self.owner_ids]

    # ------------------------------------------------------------------ decryption
    def _check_round(self, m: Message, purpose: str) -> None:
        if m.round != self._round or purpose != self._purpose:
            raise ProtocolError(
                f"manager: {type(m).__name__} for round {m.round} ({purpose}) while round "
                f"{self._round} ({self._purpose}) is open"
            )

    def _on_digest(self, sender: str, m: jm.ContributionDigest) -> Outgoing:
        """Collect the owners' contribution digests; once all are in, relay them to the
        key-holding owners, who decrypt only the sum of exactly these contributions."""
        if sender != jm.owner_name(m.party_id) or m.party_id not in self.owner_ids:
            raise ProtocolError(f"{sender} may not report party {m.party_id}'s contribution")
        self._check_round(m, m.purpose)
        if m.party_id in self._digests:
            raise ProtocolError(f"{sender} reported two contributions for round {m.round}")
        self._digests[m.party_id] = m.digest
        if len(self._digests) < len(self.owner_ids):
            return []
        keyed = self._require_session().scheme.key_party_ids
        relay = new_message(jm.ContributionDigests, self.session_id, m.round, purpose=m.purpose,
                            digests=tuple(self._digests[i] for i in self.owner_ids))
        return [(jm.owner_name(i), relay) for i in self.owner_ids if i in keyed]

    def _on_aggregate(self, sender: str, m: jm.Aggregate) -> Outgoing:
        if sender != jm.CENTRE:
            raise ProtocolError("only the centre sends aggregates")
        self._check_round(m, m.purpose)
        if self._aggregate is not None:
            raise ProtocolError("manager: two aggregates for one round")
        session = self._require_session()
        scheme = session.scheme
        if scheme.key_fingerprint is None:
            raise ProtocolError("manager: an aggregate before the joint key")
        if len(self._digests) < len(self.owner_ids):
            raise NotReady  # an owner's digest of this round has not arrived yet
        start = time.perf_counter()
        self._aggregate = open_contributions(session, m.purpose, m.contributions,
                                             [self._digests[i] for i in self.owner_ids])
        self.timings["manager: check and add contributions"] += time.perf_counter() - start
        if self._key is not None:
            start = time.perf_counter()
            self._partials[jm.MANAGER_ID] = self._key.partial_decrypt(self._aggregate)
            self.timings["manager: partial decrypt"] += time.perf_counter() - start
        return self._maybe_fuse()

    def _on_partial(self, sender: str, m: jm.Partial) -> Outgoing:
        scheme = self._require_session().scheme
        if scheme.key_fingerprint is None:
            raise ProtocolError("manager: a partial decryption before the joint key")
        if sender != jm.owner_name(m.party_id) or m.party_id not in self.owner_ids or \
                m.party_id not in scheme.key_party_ids:
            raise ProtocolError(f"{sender} may not send party {m.party_id}'s partial decryption")
        self._check_round(m, m.purpose)
        if m.party_id in self._partials:
            raise ProtocolError(f"duplicated partial decryption from party {m.party_id}")
        self._partials[m.party_id] = scheme.partial_from_bytes(m.partial)
        return self._maybe_fuse()

    def _maybe_fuse(self) -> Outgoing:
        if self._aggregate is None:
            return []  # partials may arrive before the aggregate itself
        scheme = self._require_session().scheme
        if len(self._partials) < len(scheme.key_party_ids):
            return []
        start = time.perf_counter()
        values = scheme.fuse(self._aggregate, self._partials.values())
        self.timings["manager: fuse"] += time.perf_counter() - start
        return self._on_plain_result(values)

    def _on_plain_result(self, values: npt.NDArray[np.int64]) -> Outgoing:
        if self._purpose == "d2":
            return self._on_d2(values)
        return self._on_stats(values)

    # ------------------------------------------------------------------ k-means++
    def _on_d2(self, values: npt.NDArray[np.int64]) -> Outgoing:
        totals = [decode_total(values[i * D2_SLOTS:(i + 1) * D2_SLOTS].tolist())
                  for i in range(len(self.owner_ids))]
        self.log.d2_totals.append(totals)
        weights = np.array(totals)
        if weights.sum() <= 0:  # every record coincides with a centre: any owner will do
            weights = np.ones(len(totals))
        owner = self.owner_ids[int(self._rng.choice(len(totals), p=weights / weights.sum()))]
        self._sampled_owner = owner
        self.log.sampled_owners.append(owner)
        step = len(self._centres_int)
        return [(jm.owner_name(owner),
                 new_message(jm.PickRequest, self.session_id, self._round, step=step))]

    def _on_record(self, sender: str, m: jm.PickedRecord) -> Outgoing:
        if self._sampled_owner is None or sender != jm.owner_name(self._sampled_owner):
            raise ProtocolError(f"{sender} sent a record it was not asked for")
        if m.step != len(self._centres_int) or m.round != self._round:
            raise ProtocolError("manager: a picked record for another step")
        if len(m.record) != self.n_features:
            raise ProtocolError("manager: a picked record of the wrong dimension")
        self._sampled_owner = None
        self._centres_int.append(tuple(int(v) for v in m.record))
        if len(self._centres_int) < self.n_clusters:
            return self._request_d2(len(self._centres_int))
        session = self._require_session()
        centres = session.encoder.decode(np.array(self._centres_int, dtype=np.int64))
        return self._begin_lloyd(centres)

    # ------------------------------------------------------------------ Lloyd
    def _on_stats(self, values: npt.NDArray[np.int64]) -> Outgoing:
        session = self._require_session()
        k, d = self.n_clusters, self.n_features
        if values.size != k * d + k:
            raise ProtocolError(f"manager: aggregate of {values.size} values, expected {k * d + k}")
        sums, counts = values[:k * d].reshape(k, d), values[k * d:]
        self.log.aggregates.append((sums.copy(), counts.copy()))
        assert self.centroids_ is not None
        old = self.centroids_
        new = old.copy()
        offset = self.dp.middle if self.dp is not None else np.zeros(d)
        for j in range(k):
            if counts[j] >= 1:  # empty (or, with DP noise, non-positive) clusters stay put
                new[j] = session.encoder.decode(sums[j]) / counts[j] + offset
        if self.dp is not None:
            new = np.clip(new, np.array(self.dp.lower), np.array(self.dp.upper))
        self.n_iter_ += 1
        self.centroids_ = new
        shift = float(((new - old) ** 2).sum())
        converged = self.dp is None and shift <= self.tol
        if converged or self.n_iter_ >= self.max_iter:
            return self._finish()
        return self._send_centroids()

    def _finish(self) -> Outgoing:
        assert self.centroids_ is not None
        self.stage_marks["final"] = time.perf_counter()
        self.log.released.append(self.centroids_.copy())
        self.done = True
        final = new_message(jm.Final, self.session_id, self._round, n_iter=self.n_iter_,
                     centroids=tuple(float(v) for v in self.centroids_.ravel()))
        out: Outgoing = [(jm.owner_name(i), final) for i in self.owner_ids]
        out.append((jm.CENTRE, new_message(jm.Close, self.session_id, self._round)))
        return out

    def _require_session(self) -> Session:
        if self._session is None:
            raise ProtocolError("manager: no session")
        return self._session
