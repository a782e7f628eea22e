"""Protocol 4.2 (joint k-means): the data owner's side (the whole sequence and the leakage
table: :mod:`cipherseg.protocols.joint`).

What an owner O_i does, message by message::

    Setup (M)              encode its data; generate its key share s_i, p_i → KeyCommitment (C)
    KeyCommitments (C)     its own commitment unchanged, one per key party → PublicKeyShare (C)
    KeyShares (C)          every p_j opens its commitment, its own p_i unchanged → pk = Σ p_j,
                           KeyReady(fingerprint) (M)
    D2Request, Centroids   its D² total, or its per-cluster sums and counts (fixed point, DP
      (M)                  noise first if the session has a budget) → EncryptedVector (C) and
                           ContributionDigest (M); once per round and purpose
    ContributionDigests    every owner's digest of the round, its own unchanged (kept)
      (M)
    Aggregate (C)          ct_1…ct_n: each matches its digest and the round's length → adds
                           them, partially decrypts the sum once → Partial (M)
    PickRequest (M)        a record sampled ∝ D² among its own → PickedRecord (M)
    Final (M)              labels its own customers with the released centroids

What it learns: the released centroids of every iteration (with its own contribution, the
other owners' pooled per-cluster sums), the k initial records, its own labels. Its customers
never leave :class:`JointOwner` in plaintext except a record k-means++ picks; it releases a
partial decryption only of a sum of every owner's genuine contribution of a round it took
part in (:func:`~cipherseg.protocols.joint.session.open_contributions`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from cipherseg.errors import EncodingError, ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.dp import gaussian_release
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.session import (
    D2_SLOTS,
    Session,
    build_joint_key,
    check_commitments,
    choice_source,
    encode_total,
    generator_from,
    key_commitment,
    new_message,
    open_contributions,
    open_session,
)
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
from cipherseg.schemes.base import DecryptionShare
from cipherseg.schemes.threshold_keys import KeyShare


def assign(points: npt.NDArray[np.float64], centroids: npt.NDArray[np.float64]
           ) -> npt.NDArray[np.int64]:
    """Index of the nearest centroid (squared Euclidean distance; ties to the lower index).

    >>> assign(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[4.0, 4.0], [0.1, 0.0]])).tolist()
    [1, 0]
    """
    return assign_columns(np.ascontiguousarray(np.asarray(points, dtype=np.float64).T),
                           centroids)


def assign_columns(columns: npt.NDArray[np.float64], centroids: npt.NDArray[np.float64]
                    ) -> npt.NDArray[np.int64]:
    """:func:`assign` on feature-major data (shape (d, n)): one contiguous pass per feature
    and centroid, several times faster than broadcasting (n, k, d) temporaries."""
    labels = np.zeros(columns.shape[1], dtype=np.int64)
    best = squared_distances(columns, centroids[0])
    for j in range(1, centroids.shape[0]):
        d2 = squared_distances(columns, centroids[j])
        closer = d2 < best
        np.copyto(best, d2, where=closer)
        labels[closer] = j
    return labels


def squared_distances(columns: npt.NDArray[np.float64], centre: npt.NDArray[np.float64]
                       ) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = (columns[0] - centre[0]) ** 2
    for f in range(1, columns.shape[0]):
        out += (columns[f] - centre[f]) ** 2
    return out


class JointOwner:
    """A data owner: its customers' features stay here; it sends only encrypted aggregates
    (and, when k-means++ picks one of its records, that record).

    Parameters
    ----------
    party_id:
        1, 2, … (0 is the manager).
    X:
        Its customers' features, shape (n_customers, n_features), business units.
    random_state:
        Seeds this owner's *sampling* (the record it picks in k-means++) for reproducible
        runs; ``None`` draws it from the OS CSPRNG. Key shares, encryption randomness,
        smudging and DP noise always come from the OS CSPRNG.
    """

    def __init__(self, party_id: int, X: npt.ArrayLike, *,
                 random_state: int | None = None) -> None:
        if party_id == jm.MANAGER_ID:
            raise ParameterError("party id 0 is the manager's; owners are 1, 2, …")
        self.party_id = party_id
        self.name = jm.owner_name(party_id)
        X_arr = np.asarray(X, dtype=np.float64)
        if X_arr.ndim != 2 or X_arr.shape[0] == 0:
            raise ValidationError(f"{self.name}: X must be a non-empty 2-D array")
        if not np.isfinite(X_arr).all():
            raise ValidationError(f"{self.name}: X contains NaN or infinite values")
        self._X = X_arr
        self._random_state = random_state
        self._source = choice_source(random_state, f"owner-{party_id}")
        self._rng = generator_from(self._source)
        self._session: Session | None = None
        self._key: DecryptionShare | None = None
        self._commitments: tuple[bytes, ...] | None = None
        self._contributed: dict[tuple[int, str], bytes] = {}  # (round, purpose) → own digest
        self._digests: dict[tuple[int, str], tuple[bytes, ...]] = {}  # relayed by the manager
        self._decrypted: set[tuple[int, str]] = set()
        self._x_int: npt.NDArray[np.int64] | None = None
        self._points: npt.NDArray[np.float64] | None = None  # feature-major (d, n)
        self._x_int_cols: npt.NDArray[np.float64] | None = None
        self._d2: npt.NDArray[np.float64] | None = None
        self._offset = np.zeros(X_arr.shape[1])
        self.labels_: npt.NDArray[np.int64] | None = None
        self.timings: dict[str, float] = defaultdict(float)
        self.done = False

    @property
    def n_samples(self) -> int:
        return int(self._X.shape[0])

    def handle(self, sender: str, message: Message) -> Outgoing:
        if isinstance(message, jm.Setup):
            return self._setup(sender, message)
        session = self._session
        if session is None:
            raise NotReady
        if message.session_id != session.setup.session_id:
            raise ProtocolError(f"{self.name}: message for another session")
        if isinstance(message, (jm.KeyCommitments, jm.KeyShares, jm.Aggregate)):
            if sender != jm.CENTRE:
                raise ProtocolError(f"{self.name}: {type(message).__name__} comes from the "
                                    "centre only")
            if isinstance(message, jm.KeyCommitments):
                return self._key_commitments(message)
            if isinstance(message, jm.KeyShares):
                return self._key_shares(message)
            return self._partial(message)
        if sender != jm.MANAGER:
            raise ProtocolError(f"{self.name}: {type(message).__name__} must come from the manager")
        if isinstance(message, jm.D2Request):
            return self._d2_request(message)
        if isinstance(message, jm.PickRequest):
            return self._pick(message)
        if isinstance(message, jm.Centroids):
            return self._stats(message)
        if isinstance(message, jm.ContributionDigests):
            return self._contribution_digests(message)
        if isinstance(message, jm.Final):
            start = time.perf_counter()
            self.labels_ = assign_columns(self._require_points(),
                                           self._working(message.centroids))
            self.timings["owner: final labels"] += time.perf_counter() - start
            self.done = True
            return []
        raise ProtocolError(f"{self.name} does not accept {type(message).__name__}")

    # ------------------------------------------------------------------ set-up and keys
    def _setup(self, sender: str, m: jm.Setup) -> Outgoing:
        if sender != jm.MANAGER:
            raise ProtocolError(f"{self.name}: only the manager may open a session")
        if self._session is not None:
            raise ProtocolError(f"{self.name} is already in session "
                                f"{self._session.setup.session_id!r}")
        if self.party_id not in m.owner_ids:
            raise ProtocolError(f"{self.name} is not an owner of session {m.session_id}")
        if m.n_features != self._X.shape[1]:
            raise ValidationError(
                f"{self.name} has {self._X.shape[1]} features, the session expects {m.n_features}"
            )
        start = time.perf_counter()
        session = open_session(m)
        self._session = session
        X = self._X
        if session.dp is not None:
            X = session.dp.clip(X)  # centred on the box's middle
            self._offset = session.dp.middle
        self._x_int = session.encoder.encode(X)
        self._points = np.ascontiguousarray(session.encoder.decode(self._x_int).T)  # (d, n)
        self._x_int_cols = np.ascontiguousarray(self._x_int.T.astype(np.float64))
        self._check_range(session)
        self.timings["owner: encode data"] += time.perf_counter() - start
        if self.party_id not in session.scheme.key_party_ids:  # a scheme without keys
            return [(jm.MANAGER, new_message(jm.KeyReady, m.session_id, 0, party_id=self.party_id,
                                             key_fingerprint=b""))]
        start = time.perf_counter()
        self._key = KeyShare.for_scheme(session.scheme, self.party_id)
        commitment = key_commitment(m.session_id, self.party_id, self._key.public_share_bytes())
        self.timings["owner: key generation"] += time.perf_counter() - start
        return [(jm.CENTRE, new_message(jm.KeyCommitment, m.session_id, 0,
                                        party_id=self.party_id, commitment=commitment))]

    def _check_range(self, session: Session) -> None:
        """Every aggregate this owner contributes to must fit the plaintext range."""
        x_int = self._require_ints()
        limit = session.scheme.max_value
        n_owners = len(session.setup.owner_ids)
        peak = int(np.abs(x_int).max(initial=0)) + 1
        if session.dp is not None:  # noisy sums: allow 20 standard deviations of noise
            peak += int(20 * session.dp.sum_noise_std * session.encoder.scale) + 1
        if self.n_samples * peak * n_owners > limit:
            raise EncodingError(
                f"{self.name}: {self.n_samples} customers with |x| up to {peak} (10^"
                f"{session.encoder.decimals} units) could overflow the joint sums "
                f"(limit {limit} for {n_owners} owners); lower `decimals` or rescale features"
            )

    def _key_commitments(self, m: jm.KeyCommitments) -> Outgoing:
        """Reveal this owner's public share only once every key party is committed to its."""
        session = self._require_session()
        if self._key is None:
            raise ProtocolError(f"{self.name}: key commitments without a key share of its own")
        if self._commitments is not None:
            raise ProtocolError(f"{self.name}: key commitments relayed twice")
        share = self._key.public_share_bytes()
        self._commitments = check_commitments(session, m.commitments, share, self.party_id)
        return [(jm.CENTRE, new_message(jm.PublicKeyShare, m.session_id, 0,
                                        party_id=self.party_id, share=share))]

    def _key_shares(self, m: jm.KeyShares) -> Outgoing:
        session = self._require_session()
        if self._key is None or self._commitments is None:
            raise ProtocolError(f"{self.name}: key shares before the key commitments")
        if session.scheme.key_fingerprint is not None:
            raise ProtocolError(f"{self.name}: key shares relayed twice")
        start = time.perf_counter()
        fingerprint = build_joint_key(session, m.shares, self._key.public_share_bytes(),
                                      self.party_id, self._commitments)
        self.timings["owner: key generation"] += time.perf_counter() - start
        return [(jm.MANAGER, new_message(jm.KeyReady, m.session_id, 0, party_id=self.party_id,
                                         key_fingerprint=fingerprint))]

    # ------------------------------------------------------------------ k-means++
    def _d2_request(self, m: jm.D2Request) -> Outgoing:
        session = self._require_session()
        start = time.perf_counter()
        if m.step == 0:
            d2 = np.ones(self.n_samples)
        else:
            centres = np.asarray(m.centres, dtype=np.float64).reshape(m.step, session.d)
            cols = self._x_int_cols
            assert cols is not None
            d2 = squared_distances(cols, centres[0])  # exact: integers, squares below 2^53
            for c in centres[1:]:
                np.minimum(d2, squared_distances(cols, c), out=d2)
        self._d2 = d2
        total = float(d2.sum())
        vector = np.zeros(D2_SLOTS * len(session.setup.owner_ids), dtype=np.int64)
        slot = session.setup.owner_ids.index(self.party_id) * D2_SLOTS
        vector[slot:slot + D2_SLOTS] = encode_total(total)
        self.timings["owner: local compute"] += time.perf_counter() - start
        return self._contribute(m, "d2", vector)

    def _pick(self, m: jm.PickRequest) -> Outgoing:
        if self._d2 is None:
            raise ProtocolError(f"{self.name}: pick request before any D² round")
        weights = self._d2 / self._d2.sum() if self._d2.sum() > 0 else None
        index = int(self._rng.choice(self.n_samples, p=weights))
        record = tuple(int(v) for v in self._require_ints()[index])
        return [(jm.MANAGER, new_message(jm.PickedRecord, m.session_id, m.round, step=m.step,
                                  record=record))]

    # ------------------------------------------------------------------ Lloyd
    def _working(self, centroids: Sequence[float]) -> npt.NDArray[np.float64]:
        session = self._require_session()
        c = np.asarray(centroids, dtype=np.float64).reshape(session.k, session.d)
        out: npt.NDArray[np.float64] = c - self._offset
        return out

    def _stats(self, m: jm.Centroids) -> Outgoing:
        session = self._require_session()
        start = time.perf_counter()
        labels = assign_columns(self._require_points(), self._working(m.centroids))
        cols = self._x_int_cols
        assert cols is not None
        counts = np.bincount(labels, minlength=session.k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=cols[f], minlength=session.k)
                         for f in range(session.d)], axis=1)  # exact below 2^53
        if session.dp is not None:
            noisy_sums, noisy_counts = gaussian_release(
                session.encoder.decode(sums), counts, session.dp)  # noise: os.urandom
            sums_int = session.encoder.encode(noisy_sums)
            counts_int = np.rint(noisy_counts).astype(np.int64)
        else:
            sums_int = np.rint(sums).astype(np.int64)
            counts_int = counts.astype(np.int64)
        vector = np.concatenate([sums_int.ravel(), counts_int])
        self.timings["owner: local compute"] += time.perf_counter() - start
        return self._contribute(m, "stats", vector)

    # ------------------------------------------------------------------ crypto
    def _contribute(self, m: Message, purpose: str, vector: npt.NDArray[np.int64]) -> Outgoing:
        """Encrypt this round's contribution for the centre; report its digest to the manager,
        which relays every owner's digest to the key parties (they decrypt nothing else)."""
        scheme = self._require_session().scheme
        key = (m.round, purpose)
        if key in self._contributed:
            raise ProtocolError(f"{self.name}: a second {purpose!r} request for round {m.round}")
        start = time.perf_counter()
        blob = scheme.encrypt(vector)
        self.timings["owner: encrypt"] += time.perf_counter() - start
        self._contributed[key] = digest = scheme.digest(blob)
        return [(jm.CENTRE, new_message(jm.EncryptedVector, m.session_id, m.round,
                                        purpose=purpose, ciphertext=blob)),
                (jm.MANAGER, new_message(jm.ContributionDigest, m.session_id, m.round,
                                         purpose=purpose, party_id=self.party_id,
                                         digest=digest))]

    def _contribution_digests(self, m: jm.ContributionDigests) -> Outgoing:
        session = self._require_session()
        key = (m.round, m.purpose)
        own = self._contributed.get(key)
        if own is None or key in self._decrypted or key in self._digests:
            raise ProtocolError(f"{self.name}: contribution digests for a round it did not "
                                "contribute to, or twice")
        owners = session.setup.owner_ids
        if len(m.digests) != len(owners) or m.digests[owners.index(self.party_id)] != own:
            raise ProtocolError(f"{self.name}: the relayed contribution digests do not contain "
                                "its own unchanged, one per owner")
        self._digests[key] = tuple(m.digests)
        return []

    def _partial(self, m: jm.Aggregate) -> Outgoing:
        session = self._require_session()
        if self._key is None or session.scheme.key_fingerprint is None:
            raise ProtocolError(f"{self.name}: an aggregate to decrypt without a joint key")
        key = (m.round, m.purpose)
        if key in self._decrypted or key not in self._contributed:
            raise ProtocolError(
                f"{self.name}: refusing to decrypt a {m.purpose!r} aggregate of round {m.round}: "
                "it decrypts one aggregate per round and purpose, of a round it contributed to"
            )
        digests = self._digests.get(key)
        if digests is None:
            raise NotReady  # the manager's digests of this round have not arrived yet
        start = time.perf_counter()
        aggregate = open_contributions(session, m.purpose, m.contributions, digests)
        self._decrypted.add(key)
        del self._digests[key]
        self.timings["owner: check and add contributions"] += time.perf_counter() - start
        start = time.perf_counter()
        partial = self._key.partial_decrypt(aggregate).to_bytes()
        self.timings["owner: partial decrypt"] += time.perf_counter() - start
        return [(jm.MANAGER, new_message(jm.Partial, m.session_id, m.round, purpose=m.purpose,
                                  party_id=self.party_id, partial=partial))]

    # ------------------------------------------------------------------ helpers
    def _require_session(self) -> Session:
        if self._session is None:
            raise ProtocolError(f"{self.name}: no session")
        return self._session

    def _require_ints(self) -> npt.NDArray[np.int64]:
        if self._x_int is None:
            raise ProtocolError(f"{self.name}: no session")
        return self._x_int

    def _require_points(self) -> npt.NDArray[np.float64]:
        if self._points is None:
            raise ProtocolError(f"{self.name}: no session")
        return self._points
