"""Protocol 4.2 — joint k-means: several data owners, a compute centre, a manager, threshold keys.

Parties: owners O_1…O_n (each holds its customers' features in plaintext and a secret key
share), the manager M (key share; fuses decryptions, releases the model), the compute centre C
(no key; adds ciphertexts). The joint key has n+1 shares (the owners' and the manager's), so no
coalition of owners without the manager, and no manager without every owner, can decrypt.

Message sequence (:mod:`cipherseg.protocols.kmeans_joint_messages`; every message is a
versioned :class:`~cipherseg.protocols.messages.Message` carrying session id and round)::

    M → C, O_i   Setup(params, CRS seed, owners, k, d, decimals, init, max_iter, tol, DP budget)
    O_i, M → C   PublicKeyShare(p_i)                                  # collective key generation
    C → O_i, M   KeyShares(p_0…p_n)          each party builds pk = Σ p_i and checks its own p_i
    O_i → M      KeyReady(fingerprint of pk)               M checks that everyone has the same pk
    # joint k-means++ (not in DP mode), for step j = 0 … k-1
    M → O_i      D2Request(j, centres c_0…c_{j-1})
    O_i → C      EncryptedVector("d2", Enc(D²_i total in O_i's own slots))   (j = 0: D² ≡ 1)
    C → O_i, M   Aggregate("d2", Σ ciphertexts)
    O_i, M → M   Partial("d2", h_i)           M fuses: the per-owner totals; samples owner i ∝ D²_i
    M → O_i      PickRequest(j)
    O_i → M      PickedRecord(j, x)                       a record of O_i sampled ∝ D²(x) inside O_i
    # Lloyd iterations r = 0, 1, …
    M → O_i      Centroids(r, c)
    O_i → C      EncryptedVector("stats", Enc(per-cluster sums and counts of O_i, fixed point))
    C → O_i, M   Aggregate("stats", Σ ciphertexts)
    O_i, M → M   Partial("stats", h_i)               M fuses: Σ sums, Σ counts → new centroids
    M → O_i      Final(n_iter, c)   when the centroids stop moving (or max_iter); M → C Close

Leakage per party (ARCHITECTURE §1 terms; the table in ``docs/security.md``):

* **Compute centre**: the public schedule — number of owners, k, d, iterations, message sizes
  and timing. Every value it handles is encrypted under a key it has no share of; it never
  sees centroids, counts, sums, D² totals or records.
* **Manager**: per iteration the pooled per-cluster sums and counts (hence the centroids and
  cluster sizes of the pooled data); during k-means++ every owner's D² total (step 0: every
  owner's number of customers), which owner each initial centre comes from, and the k initial
  records themselves.
* **Each owner**: its own data; the released centroids of every iteration (and with its own
  contribution, the *other owners' pooled* per-cluster means); the k initial records (one may
  be its own), and whether it was sampled. Nothing per other owner beyond that.
* **Reconstruction risk**: per-iteration releases are exact without DP; differencing them
  across iterations, an owner (who knows its own contributions) can recover other owners'
  records when few records change clusters between iterations (a record moving alone is
  revealed exactly). The DP option (:mod:`cipherseg.protocols.dp`) adds Gaussian noise to
  every owner's contribution, so every release is (ε, δ)-DP per customer.
* Semi-honest model: parties follow the protocol. The fusion noise check detects corrupted
  or missing partial decryptions; a party that lies about its data is not detected.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> parts = [np.vstack([rng.normal(0, .1, (30, 2)), rng.normal(3, .1, (30, 2))])
...          for _ in range(2)]
>>> result = run_joint_kmeans(parts, n_clusters=2, random_state=1)
>>> sorted(np.bincount(np.concatenate(result.labels)).tolist())
[60, 60]
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import queue
import secrets
import time
import traceback
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import EncodingError, ParameterError, ProtocolError, ValidationError
from cipherseg.protocols import kmeans_joint_messages as jm
from cipherseg.protocols.dp import DPConfig, gaussian_release
from cipherseg.protocols.kmeans_joint_centre import (
    JointCentre,
    _plain_from_bytes,
    _plain_to_bytes,
)
from cipherseg.protocols.messages import Message
from cipherseg.schemes.rlwe_sampling import RandomSource, SeededRandomSource, SystemRandomSource
from cipherseg.schemes.threshold import (
    Ciphertext,
    CommonReference,
    JointPublicKey,
    PartialDecryption,
    PublicShare,
    ThresholdParams,
    encrypt,
    fuse,
    joint_public_key,
    new_crs,
)
from cipherseg.schemes.threshold_keys import KeyShare

Outgoing = list[tuple[str, Message]]
INITS = ("k-means++", "random", "given")
STAGES = ("keygen", "init", "iterations", "final")
_D2_SLOTS = 3  # per owner: mantissa high, mantissa low, exponent of its float64 D² total
_MANTISSA_SPLIT = 27


class NotReady(Exception):
    """A message arrived before the one it depends on (another sender's); deliver it later."""


class Party(Protocol):
    """What the transport needs of a party."""

    name: str
    timings: dict[str, float]

    def handle(self, sender: str, message: Message) -> Outgoing: ...


def one_blas_thread() -> threadpool_limits:
    """Limit BLAS to one thread (a context manager, or for good when not used as one).

    The scheme's small matrix products (c0 and partial decryptions) take 0.1 ms; a second
    OpenBLAS thread gains nothing there but spins between calls, which on this 2-vCPU machine
    measured a whole extra core busy and the owners' own k-means work 5-10 % slower.
    """
    return threadpool_limits(limits=1, user_api="blas")


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


def _source(random_state: int | None, label: str) -> RandomSource:
    """Source of the parties' sampling choices (never of keys or noise): the OS CSPRNG by
    default, a SHAKE stream from ``random_state`` for reproducible runs."""
    if random_state is None:
        return SystemRandomSource()
    return SeededRandomSource(int(random_state).to_bytes(16, "little", signed=True),
                              label.encode())


def _generator(source: RandomSource) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(source.random_bytes(16), "little"))


def _msg(cls: type[Message], session_id: str, round_: int, **fields: Any) -> Any:
    return cls(protocol_version=jm.VERSION, session_id=session_id, round=round_, **fields)


def _encode_total(total: float) -> list[int]:
    """A non-negative float64 as [mantissa high, mantissa low, exponent] integers (exact)."""
    if not math.isfinite(total) or total < 0:
        raise ValidationError(f"a D² total must be finite and >= 0, got {total}")
    if total == 0:
        return [0, 0, 0]
    mantissa, exponent = math.frexp(total)
    m = int(mantissa * 2**53)
    return [m >> _MANTISSA_SPLIT, m & ((1 << _MANTISSA_SPLIT) - 1), exponent - 53]


def _decode_total(slots: Sequence[int]) -> float:
    hi, lo, exponent = (int(v) for v in slots)
    return math.ldexp(float((hi << _MANTISSA_SPLIT) | lo), exponent)


def assign(points: npt.NDArray[np.float64], centroids: npt.NDArray[np.float64]
           ) -> npt.NDArray[np.int64]:
    """Index of the nearest centroid (squared Euclidean distance; ties to the lower index).

    >>> assign(np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([[4.0, 4.0], [0.1, 0.0]])).tolist()
    [1, 0]
    """
    return _assign_columns(np.ascontiguousarray(np.asarray(points, dtype=np.float64).T),
                           centroids)


def _assign_columns(columns: npt.NDArray[np.float64], centroids: npt.NDArray[np.float64]
                    ) -> npt.NDArray[np.int64]:
    """:func:`assign` on feature-major data (shape (d, n)): one contiguous pass per feature
    and centroid, several times faster than broadcasting (n, k, d) temporaries."""
    labels = np.zeros(columns.shape[1], dtype=np.int64)
    best = _squared_distances(columns, centroids[0])
    for j in range(1, centroids.shape[0]):
        d2 = _squared_distances(columns, centroids[j])
        closer = d2 < best
        np.copyto(best, d2, where=closer)
        labels[closer] = j
    return labels


def _squared_distances(columns: npt.NDArray[np.float64], centre: npt.NDArray[np.float64]
                       ) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = (columns[0] - centre[0]) ** 2
    for f in range(1, columns.shape[0]):
        out += (columns[f] - centre[f]) ** 2
    return out


def data_independent_centres(k: int, lower: Sequence[float], upper: Sequence[float],
                             rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """k centres spread in the public box, independent of any data (DP mode): uniform draws
    inside the box shrunk by r, at least 2r apart, halving r until k fit (the sphere-packing
    initialisation of diffprivlib's KMeans)."""
    lo, hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    radius = float(np.min(hi - lo)) / 2.0
    while radius > 1e-12:
        centres: list[npt.NDArray[np.float64]] = []
        retries = 0
        while len(centres) < k and retries < 100:
            candidate = lo + radius + rng.random(lo.size) * (hi - lo - 2 * radius)
            if all(np.linalg.norm(candidate - c) >= 2 * radius for c in centres):
                centres.append(candidate)
                retries = 0
            else:
                retries += 1
        if len(centres) == k:
            return np.array(centres)
        radius /= 2.0
    return lo + rng.random((k, lo.size)) * (hi - lo)


@dataclass
class _Session:
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


def _open_session(m: jm.Setup) -> _Session:
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
    return _Session(m, FixedPointEncoder(decimals=m.decimals, max_abs_int=max_abs), dp, params,
                    crs)


def _build_key(session: _Session, share_blobs: Sequence[bytes],
               own: KeyShare) -> JointPublicKey:
    if session.crs is None or session.params is None:
        raise ProtocolError("key shares arrived in a session without threshold keys")
    shares = [PublicShare.from_bytes(b, session.crs) for b in share_blobs]
    mine = [s for s in shares if s.party_id == own.party_id]
    if len(mine) != 1 or not np.array_equal(mine[0].p_hat, own.public_share.p_hat):
        raise ProtocolError(
            f"the key shares relayed by the centre do not contain party {own.party_id}'s "
            "share unchanged; refusing the joint key"
        )
    return joint_public_key(session.params, session.crs, shares,
                            expected_party_ids=session.key_party_ids)


# ====================================================================== data owner
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
        self._source = _source(random_state, f"owner-{party_id}")
        self._rng = _generator(self._source)
        self._session: _Session | None = None
        self._key: KeyShare | None = None
        self._pk: JointPublicKey | None = None
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
        if isinstance(message, jm.KeyShares):
            return self._key_shares(message)
        if isinstance(message, jm.Aggregate):
            if sender != jm.CENTRE:
                raise ProtocolError(f"{self.name}: aggregates come from the centre only")
            return self._partial(message)
        if sender != jm.MANAGER:
            raise ProtocolError(f"{self.name}: {type(message).__name__} must come from the manager")
        if isinstance(message, jm.D2Request):
            return self._d2_request(message)
        if isinstance(message, jm.PickRequest):
            return self._pick(message)
        if isinstance(message, jm.Centroids):
            return self._stats(message)
        if isinstance(message, jm.Final):
            start = time.perf_counter()
            self.labels_ = _assign_columns(self._require_points(),
                                           self._working(message.centroids))
            self.timings["owner: final labels"] += time.perf_counter() - start
            self.done = True
            return []
        raise ProtocolError(f"{self.name} does not accept {type(message).__name__}")

    # ------------------------------------------------------------------ set-up and keys
    def _setup(self, sender: str, m: jm.Setup) -> Outgoing:
        if sender != jm.MANAGER:
            raise ProtocolError(f"{self.name}: only the manager may open a session")
        if self.party_id not in m.owner_ids:
            raise ProtocolError(f"{self.name} is not an owner of session {m.session_id}")
        if m.n_features != self._X.shape[1]:
            raise ValidationError(
                f"{self.name} has {self._X.shape[1]} features, the session expects {m.n_features}"
            )
        start = time.perf_counter()
        session = _open_session(m)
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
        if session.crs is None or session.params is None:
            return [(jm.MANAGER, _msg(jm.KeyReady, m.session_id, 0, party_id=self.party_id,
                                      key_fingerprint=b""))]
        start = time.perf_counter()
        self._key = KeyShare.generate(session.params, session.crs, self.party_id)
        share = self._key.public_share.to_bytes()
        self.timings["owner: key generation"] += time.perf_counter() - start
        return [(jm.CENTRE, _msg(jm.PublicKeyShare, m.session_id, 0, party_id=self.party_id,
                                 share=share))]

    def _check_range(self, session: _Session) -> None:
        """Every aggregate this owner contributes to must fit the plaintext range."""
        x_int = self._require_ints()
        limit = (session.params.max_value if session.params is not None else 2**62)
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

    def _key_shares(self, m: jm.KeyShares) -> Outgoing:
        session = self._require_session()
        if self._key is None:
            raise ProtocolError(f"{self.name}: key shares without a key share of its own")
        start = time.perf_counter()
        self._pk = _build_key(session, m.shares, self._key)
        self.timings["owner: key generation"] += time.perf_counter() - start
        return [(jm.MANAGER, _msg(jm.KeyReady, m.session_id, 0, party_id=self.party_id,
                                  key_fingerprint=self._pk.fingerprint))]

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
            d2 = _squared_distances(cols, centres[0])  # exact: integers, squares below 2^53
            for c in centres[1:]:
                np.minimum(d2, _squared_distances(cols, c), out=d2)
        self._d2 = d2
        total = float(d2.sum())
        vector = np.zeros(_D2_SLOTS * len(session.setup.owner_ids), dtype=np.int64)
        slot = session.setup.owner_ids.index(self.party_id) * _D2_SLOTS
        vector[slot:slot + _D2_SLOTS] = _encode_total(total)
        self.timings["owner: local compute"] += time.perf_counter() - start
        return [(jm.CENTRE, _msg(jm.EncryptedVector, m.session_id, m.round, purpose="d2",
                                 ciphertext=self._encrypt(vector)))]

    def _pick(self, m: jm.PickRequest) -> Outgoing:
        if self._d2 is None:
            raise ProtocolError(f"{self.name}: pick request before any D² round")
        weights = self._d2 / self._d2.sum() if self._d2.sum() > 0 else None
        index = int(self._rng.choice(self.n_samples, p=weights))
        record = tuple(int(v) for v in self._require_ints()[index])
        return [(jm.MANAGER, _msg(jm.PickedRecord, m.session_id, m.round, step=m.step,
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
        labels = _assign_columns(self._require_points(), self._working(m.centroids))
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
        return [(jm.CENTRE, _msg(jm.EncryptedVector, m.session_id, m.round, purpose="stats",
                                 ciphertext=self._encrypt(vector)))]

    # ------------------------------------------------------------------ crypto
    def _encrypt(self, vector: npt.NDArray[np.int64]) -> bytes:
        start = time.perf_counter()
        pk = self._pk
        blob = _plain_to_bytes(vector) if pk is None else encrypt(pk, vector).to_bytes()
        self.timings["owner: encrypt"] += time.perf_counter() - start
        return blob

    def _partial(self, m: jm.Aggregate) -> Outgoing:
        if self._pk is None or self._key is None:
            raise ProtocolError(f"{self.name}: an aggregate to decrypt without threshold keys")
        start = time.perf_counter()
        ct = Ciphertext.from_bytes(m.ciphertext, self._pk)
        partial = self._key.partial_decrypt(ct).to_bytes()
        self.timings["owner: partial decrypt"] += time.perf_counter() - start
        return [(jm.MANAGER, _msg(jm.Partial, m.session_id, m.round, purpose=m.purpose,
                                  party_id=self.party_id, partial=partial))]

    # ------------------------------------------------------------------ helpers
    def _require_session(self) -> _Session:
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


# ====================================================================== manager
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
        self._source = _source(random_state, "manager")
        self._rng = _generator(self._source)
        self.session_id = session_id or uuid.uuid4().hex
        self._crs_seed = secrets.token_bytes(32)  # public, fresh per session
        self._session: _Session | None = None
        self._key: KeyShare | None = None
        self._pk: JointPublicKey | None = None
        self._ready: dict[int, bytes] = {}
        self._round = 0
        self._purpose = ""
        self._aggregate: Ciphertext | npt.NDArray[np.int64] | None = None
        self._partials: dict[int, PartialDecryption] = {}
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
        setup = _msg(
            jm.Setup, self.session_id, 0, mode=self.mode,
            params=self.params.to_bytes() if self.mode == "threshold" else b"",
            crs_seed=self._crs_seed if self.mode == "threshold" else b"",
            owner_ids=self.owner_ids, n_clusters=self.n_clusters, n_features=self.n_features,
            decimals=self.decimals, init=self.init, max_iter=self.max_iter, tol=self.tol,
            dp_epsilon=dp.epsilon if dp else 0.0, dp_delta=dp.delta if dp else 0.0,
            dp_lower=dp.lower if dp else (), dp_upper=dp.upper if dp else (),
        )
        self._session = _open_session(setup)
        out: Outgoing = [(jm.CENTRE, setup)]
        out += [(jm.owner_name(i), setup) for i in self.owner_ids]
        session = self._session
        if session.crs is not None and session.params is not None:
            start = time.perf_counter()
            self._key = KeyShare.generate(session.params, session.crs, jm.MANAGER_ID)
            out.append((jm.CENTRE, _msg(jm.PublicKeyShare, self.session_id, 0,
                                        party_id=jm.MANAGER_ID,
                                        share=self._key.public_share.to_bytes())))
            self.timings["manager: key generation"] += time.perf_counter() - start
        return out

    # ------------------------------------------------------------------ dispatch
    def handle(self, sender: str, message: Message) -> Outgoing:
        session = self._session
        if session is None:
            raise ProtocolError("the manager has not started a session")
        if message.session_id != self.session_id:
            raise ProtocolError("manager: message for another session")
        if isinstance(message, jm.KeyShares):
            if self._key is None:
                raise ProtocolError("manager: key shares in a session without keys")
            start = time.perf_counter()
            self._pk = _build_key(session, message.shares, self._key)
            self.timings["manager: key generation"] += time.perf_counter() - start
            return self._maybe_begin()
        if isinstance(message, jm.KeyReady):
            return self._key_ready(sender, message)
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
        if self.mode == "threshold":
            if self._pk is None:
                return []
            odd = [i for i, fp in self._ready.items() if fp != self._pk.fingerprint]
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
        self._aggregate = None
        return self._round

    def _request_d2(self, step: int) -> Outgoing:
        r = self._next_round()
        self._purpose = "d2"
        flat = tuple(v for c in self._centres_int for v in c)
        msg = _msg(jm.D2Request, self.session_id, r, step=step, centres=flat)
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
        msg = _msg(jm.Centroids, self.session_id, r, iteration=self.n_iter_,
                   centroids=tuple(float(v) for v in self.centroids_.ravel()))
        return [(jm.owner_name(i), msg) for i in self.owner_ids]

    # ------------------------------------------------------------------ decryption
    def _check_round(self, m: Message, purpose: str) -> None:
        if m.round != self._round or purpose != self._purpose:
            raise ProtocolError(
                f"manager: {type(m).__name__} for round {m.round} ({purpose}) while round "
                f"{self._round} ({self._purpose}) is open"
            )

    def _on_aggregate(self, sender: str, m: jm.Aggregate) -> Outgoing:
        if sender != jm.CENTRE:
            raise ProtocolError("only the centre sends aggregates")
        self._check_round(m, m.purpose)
        if self._aggregate is not None:
            raise ProtocolError("manager: two aggregates for one round")
        if self.mode == "plain":
            values: npt.NDArray[np.int64] = _plain_from_bytes(m.ciphertext)
            self._aggregate = values
            return self._on_plain_result(values)
        if self._pk is None or self._key is None:
            raise ProtocolError("manager: an aggregate before the joint key")
        start = time.perf_counter()
        ct = Ciphertext.from_bytes(m.ciphertext, self._pk)
        self._aggregate = ct
        self._partials[jm.MANAGER_ID] = self._key.partial_decrypt(ct)
        self.timings["manager: partial decrypt"] += time.perf_counter() - start
        return self._maybe_fuse()

    def _on_partial(self, sender: str, m: jm.Partial) -> Outgoing:
        if self._pk is None:
            raise ProtocolError("manager: a partial decryption before the joint key")
        if sender != jm.owner_name(m.party_id) or m.party_id not in self.owner_ids:
            raise ProtocolError(f"{sender} may not send party {m.party_id}'s partial decryption")
        self._check_round(m, m.purpose)
        if m.party_id in self._partials:
            raise ProtocolError(f"duplicated partial decryption from party {m.party_id}")
        self._partials[m.party_id] = PartialDecryption.from_bytes(m.partial, self._pk)
        return self._maybe_fuse()

    def _maybe_fuse(self) -> Outgoing:
        if not isinstance(self._aggregate, Ciphertext):
            return []  # partials may arrive before the aggregate itself
        if len(self._partials) < len(self.owner_ids) + 1:
            return []
        start = time.perf_counter()
        values = fuse(self._aggregate, self._partials.values())
        self.timings["manager: fuse"] += time.perf_counter() - start
        return self._on_plain_result(values)

    def _on_plain_result(self, values: npt.NDArray[np.int64]) -> Outgoing:
        if self._purpose == "d2":
            return self._on_d2(values)
        return self._on_stats(values)

    # ------------------------------------------------------------------ k-means++
    def _on_d2(self, values: npt.NDArray[np.int64]) -> Outgoing:
        totals = [_decode_total(values[i * _D2_SLOTS:(i + 1) * _D2_SLOTS].tolist())
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
                 _msg(jm.PickRequest, self.session_id, self._round, step=step))]

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
        final = _msg(jm.Final, self.session_id, self._round, n_iter=self.n_iter_,
                     centroids=tuple(float(v) for v in self.centroids_.ravel()))
        out: Outgoing = [(jm.owner_name(i), final) for i in self.owner_ids]
        out.append((jm.CENTRE, _msg(jm.Close, self.session_id, self._round)))
        return out

    def _require_session(self) -> _Session:
        if self._session is None:
            raise ProtocolError("manager: no session")
        return self._session


# ====================================================================== transport
def _int_table() -> defaultdict[str, int]:
    return defaultdict(int)


def _float_table() -> defaultdict[str, float]:
    return defaultdict(float)


def _nested_int() -> defaultdict[str, defaultdict[str, int]]:
    return defaultdict(_int_table)


def _nested_float() -> defaultdict[str, defaultdict[str, float]]:
    return defaultdict(_float_table)


@dataclass
class TrafficStats:
    """Bytes and handler seconds, per party and per protocol stage (picklable)."""

    sent: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested_int)
    received: defaultdict[str, defaultdict[str, int]] = field(default_factory=_nested_int)
    seconds: defaultdict[str, defaultdict[str, float]] = field(default_factory=_nested_float)
    messages: int = 0

    def record(self, src: str, dst: str, message: Message, size: int) -> None:
        stage = stage_of(message)
        self.sent[src][stage] += size
        self.received[dst][stage] += size
        self.messages += 1

    def merge(self, other: TrafficStats) -> None:
        for mine, theirs in ((self.sent, other.sent), (self.received, other.received)):
            for party, stages in theirs.items():
                for stage, n in stages.items():
                    mine[party][stage] += n
        for party, stages_s in other.seconds.items():
            for stage, s in stages_s.items():
                self.seconds[party][stage] += s
        self.messages += other.messages

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes_sent": {p: dict(s) for p, s in self.sent.items()},
            "bytes_received": {p: dict(s) for p, s in self.received.items()},
            "handler_seconds": {p: dict(s) for p, s in self.seconds.items()},
            "messages": self.messages,
        }


def deliver(parties: dict[str, Party], initial: Iterable[tuple[str, str, Message]],
            stats: TrafficStats | None = None, *, max_messages: int = 1_000_000) -> TrafficStats:
    """Run a protocol in this process: every message crosses as bytes; messages that arrive
    before their dependencies wait (:class:`NotReady`) and are retried."""
    stats = stats or TrafficStats()
    queue_: deque[tuple[str, str, bytes]] = deque()
    waiting: dict[str, list[tuple[str, bytes]]] = defaultdict(list)

    def send(src: str, out: Outgoing) -> None:
        for dst, msg in out:
            if dst not in parties:
                raise ProtocolError(f"{src} sent {type(msg).__name__} to unknown party {dst!r}")
            data = msg.to_bytes()
            stats.record(src, dst, msg, len(data))
            queue_.append((src, dst, data))

    for src, dst, msg in initial:
        send(src, [(dst, msg)])
    handled = 0
    while queue_:
        src, dst, data = queue_.popleft()
        message = Message.from_bytes(data)
        start = time.perf_counter()
        try:
            out = parties[dst].handle(src, message)
        except NotReady:
            waiting[dst].append((src, data))
            continue
        stats.seconds[dst][stage_of(message)] += time.perf_counter() - start
        send(dst, out)
        if waiting[dst]:  # its state changed: retry what it could not take before
            queue_.extendleft(reversed([(s, dst, d) for s, d in waiting.pop(dst)]))
        handled += 1
        if handled > max_messages:
            raise ProtocolError("protocol did not terminate")
    stuck = {p: len(w) for p, w in waiting.items() if w}
    if stuck:
        raise ProtocolError(f"messages never became deliverable: {stuck}")
    return stats


# ====================================================================== results and runs
@dataclass
class JointResult:
    """Outcome of one joint k-means session (what an evaluator sees; labels stay per owner)."""

    centroids: npt.NDArray[np.float64]
    init_centres: npt.NDArray[np.float64]
    labels: list[npt.NDArray[np.int64]]
    n_iter: int
    traffic: TrafficStats
    stage_seconds: dict[str, float]
    party_timings: dict[str, dict[str, float]]
    log: ManagerLog
    mode: str
    dp: DPConfig | None = None

    @property
    def dp_epsilon_spent(self) -> float | None:
        return None if self.dp is None else self.dp.epsilon_spent()

    def bytes_per_party_per_iteration(self) -> dict[str, float]:
        """Bytes sent + received by each party in the Lloyd stage, divided by iterations."""
        out: dict[str, float] = {}
        parties = set(self.traffic.sent) | set(self.traffic.received)
        for p in sorted(parties):
            sent = self.traffic.sent[p]["iterations"] if p in self.traffic.sent else 0
            got = self.traffic.received[p]["iterations"] if p in self.traffic.received else 0
            total = sent + got
            out[p] = total / max(self.n_iter, 1)
        return out


def _stage_seconds(marks: dict[str, float], end: float) -> dict[str, float]:
    points = [(s, marks[s]) for s in STAGES if s in marks] + [("end", end)]
    return {a: b_t - a_t for (a, a_t), (_, b_t) in itertools.pairwise(points)}


def run_joint_kmeans(
    parts: Sequence[npt.ArrayLike],
    n_clusters: int,
    *,
    params: ThresholdParams | None = None,
    mode: str = "threshold",
    init: str | npt.ArrayLike = "k-means++",
    max_iter: int = 100,
    tol: float = 0.0,
    decimals: int = 2,
    dp: DPConfig | None = None,
    random_state: int | None = None,
) -> JointResult:
    """Run protocol 4.2 with every party in this process (messages still cross as bytes).

    ``parts[i]`` is owner i+1's data. See :class:`JointKMeans` for the parameters.
    """
    arrays = [np.asarray(p, dtype=np.float64) for p in parts]
    if len(arrays) < 1:
        raise ValidationError("need at least one data owner")
    d = arrays[0].shape[1] if arrays[0].ndim == 2 else 0
    init_name, init_centres = _split_init(init)
    owner_ids = list(range(1, len(arrays) + 1))
    seeds = _seeds(random_state, len(arrays) + 1)
    manager = JointManager(owner_ids, d, n_clusters, params=params, mode=mode, init=init_name,
                           init_centres=init_centres, max_iter=max_iter, tol=tol,
                           decimals=decimals, dp=dp, random_state=seeds[0])
    owners = [JointOwner(i, X, random_state=seeds[i]) for i, X in zip(owner_ids, arrays,
                                                                      strict=True)]
    centre = JointCentre()
    parties: dict[str, Party] = {manager.name: manager, centre.name: centre}
    parties.update({o.name: o for o in owners})
    stats = TrafficStats()
    with one_blas_thread():
        start = time.perf_counter()
        first = manager.start()
        stats.seconds[manager.name]["keygen"] += time.perf_counter() - start
        deliver(parties, [(manager.name, dst, m) for dst, m in first], stats)
    end = time.perf_counter()
    if not manager.done or any(not o.done for o in owners) or not centre.closed:
        raise ProtocolError("the joint k-means session ended before every party finished")
    assert manager.centroids_ is not None and manager.init_centres_ is not None
    labels = [o.labels_ for o in owners]
    return JointResult(
        centroids=manager.centroids_, init_centres=manager.init_centres_,
        labels=[lab for lab in labels if lab is not None], n_iter=manager.n_iter_,
        traffic=stats, stage_seconds=_stage_seconds(manager.stage_marks, end),
        party_timings={p.name: dict(p.timings) for p in parties.values()},
        log=manager.log, mode=mode, dp=dp,
    )


def _split_init(init: str | npt.ArrayLike) -> tuple[str, npt.NDArray[np.float64] | None]:
    if isinstance(init, str):
        return init, None
    return "given", np.asarray(init, dtype=np.float64)


def _seeds(random_state: int | None, count: int) -> list[int | None]:
    if random_state is None:
        return [None] * count
    return [int(random_state) * 1009 + i for i in range(count)]


# ====================================================================== separate processes
OwnerFactory = Callable[[int], npt.NDArray[np.float64]]


def _party_process(name: str, build: Callable[[], Any], inboxes: dict[str, Any],
                   results: Any, timeout: float, report_progress: bool = False) -> None:
    try:
        one_blas_thread()  # for the life of this party's process
        party = build()  # an owner builds its data here, before the protocol clock starts
        results.put((name, "ready", None))
        if isinstance(party, JointManager):
            token = inboxes[name].get(timeout=timeout)
            if token != ("parent", b"start"):
                raise ProtocolError("the manager expected the start signal first")
        stats = TrafficStats()

        def send(out: Outgoing) -> None:
            for dst, msg in out:
                data = msg.to_bytes()
                stats.record(name, dst, msg, len(data))
                inboxes[dst].put((name, data))

        last_state: tuple[str, int, int] | None = None

        def report() -> None:
            nonlocal last_state
            if isinstance(party, JointManager) and report_progress:
                state = party.progress_state()
                if state != last_state:
                    results.put((name, "progress", state))
                    last_state = state

        if isinstance(party, JointManager):
            start = time.perf_counter()
            send(party.start())
            stats.seconds[name]["keygen"] += time.perf_counter() - start
        waiting: list[tuple[str, bytes]] = []
        while not _finished(party):
            src, data = inboxes[name].get(timeout=timeout)
            batch = [(src, data)]
            while batch:
                s, d = batch.pop(0)
                message = Message.from_bytes(d)
                start = time.perf_counter()
                try:
                    out = party.handle(s, message)
                except NotReady:
                    waiting.append((s, d))
                    continue
                stats.seconds[name][stage_of(message)] += time.perf_counter() - start
                send(out)
                report()
                batch = waiting + batch
                waiting = []
        results.put((name, "ok", _summary(party, stats)))
    except BaseException:  # report to the parent, which raises
        results.put((name, "error", traceback.format_exc()))


def _finished(party: Any) -> bool:
    return bool(getattr(party, "done", False) or getattr(party, "closed", False))


def _summary(party: Any, stats: TrafficStats) -> dict[str, Any]:
    out: dict[str, Any] = {"timings": dict(party.timings), "traffic": stats}
    if isinstance(party, JointOwner):
        out["labels"] = party.labels_
    if isinstance(party, JointManager):
        out.update(centroids=party.centroids_, init_centres=party.init_centres_,
                   n_iter=party.n_iter_, log=party.log, stage_seconds=_stage_seconds(
                       party.stage_marks, party.stage_marks.get("final", time.perf_counter())))
    return out


def _build_owner(party_id: int, data: OwnerFactory, random_state: int | None) -> JointOwner:
    return JointOwner(party_id, data(party_id), random_state=random_state)


def _build_manager(kwargs: dict[str, Any]) -> JointManager:
    return JointManager(**kwargs)


def run_joint_kmeans_processes(
    owner_data: OwnerFactory,
    n_owners: int,
    n_features: int,
    n_clusters: int,
    *,
    params: ThresholdParams | None = None,
    mode: str = "threshold",
    init: str | npt.ArrayLike = "k-means++",
    max_iter: int = 100,
    tol: float = 0.0,
    decimals: int = 2,
    dp: DPConfig | None = None,
    random_state: int | None = None,
    timeout: float = 600.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> JointResult:
    """Run protocol 4.2 with each party in its own process; parties exchange only bytes
    through queues (one inbox per party). ``owner_data(party_id)`` builds an owner's data
    *inside* that owner's process (it must be picklable, e.g. a module-level function or a
    ``functools.partial``), so no customer record ever crosses a process boundary.
    ``progress(stage, done, total)`` is called in this process as the manager advances.
    """
    import functools

    init_name, init_centres = _split_init(init)
    owner_ids = list(range(1, n_owners + 1))
    seeds = _seeds(random_state, n_owners + 1)
    manager_kwargs = dict(owner_ids=owner_ids, n_features=n_features, n_clusters=n_clusters,
                          params=params, mode=mode, init=init_name, init_centres=init_centres,
                          max_iter=max_iter, tol=tol, decimals=decimals, dp=dp,
                          random_state=seeds[0])
    JointManager(**manager_kwargs)  # type: ignore[arg-type]  # validate before forking
    ctx = multiprocessing.get_context()
    names = [jm.MANAGER, jm.CENTRE, *(jm.owner_name(i) for i in owner_ids)]
    inboxes = {n: ctx.Queue() for n in names}
    results = ctx.Queue()
    builders: dict[str, Callable[[], Any]] = {
        jm.MANAGER: functools.partial(_build_manager, manager_kwargs),
        jm.CENTRE: JointCentre,
    }
    for i in owner_ids:
        builders[jm.owner_name(i)] = functools.partial(_build_owner, i, owner_data, seeds[i])
    start = time.perf_counter()
    procs = [ctx.Process(target=_party_process,
                         args=(n, builders[n], inboxes, results, timeout, progress is not None),
                         name=f"cipherseg-{n}", daemon=True) for n in names]
    for p in procs:
        p.start()
    summaries: dict[str, dict[str, Any]] = {}
    ready: set[str] = set()
    try:
        while len(summaries) < len(names):
            try:
                name, status, payload = results.get(timeout=timeout)
            except queue.Empty as exc:
                raise ProtocolError(f"joint k-means parties timed out after {timeout} s") from exc
            if status == "ready":
                ready.add(name)
                if len(ready) == len(names):  # every party is set up: start the protocol
                    start = time.perf_counter()
                    inboxes[jm.MANAGER].put(("parent", b"start"))
                continue
            if status == "progress":
                if progress is not None:
                    progress(*payload)
                continue
            if status != "ok":
                raise ProtocolError(f"party {name} failed:\n{payload}")
            summaries[name] = payload
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    wall = time.perf_counter() - start  # from the start signal to the last party's report
    traffic = TrafficStats()
    for s in summaries.values():
        traffic.merge(s["traffic"])
    m = summaries[jm.MANAGER]
    stage_seconds = dict(m["stage_seconds"])
    stage_seconds["wall_total"] = wall
    return JointResult(
        centroids=m["centroids"], init_centres=m["init_centres"],
        labels=[summaries[jm.owner_name(i)]["labels"] for i in owner_ids], n_iter=m["n_iter"],
        traffic=traffic, stage_seconds=stage_seconds,
        party_timings={n: s["timings"] for n, s in summaries.items()}, log=m["log"],
        mode=mode, dp=dp,
    )


# ====================================================================== estimator
class JointKMeans(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """K-means over several data owners' pooled customers without pooling them (protocol 4.2).

    Every party runs in this process (messages still cross as bytes); for separate processes
    see :func:`run_joint_kmeans_processes`, for the CLI ``cipherseg joint-demo``. Without DP
    the result equals scikit-learn's :class:`~sklearn.cluster.KMeans` on the pooled data,
    quantised to the fixed-point grid, started from the same centres (``init_centers_``).

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        "k-means++": joint k-means++ (owner sampled by its D² total, then a record inside it).
        "random": data-independent centres in ``dp_bounds`` (DP mode). An array: public
        centres.
    max_iter : int, default=100
        With DP, the number of iterations the budget is split across (all are run).
    tol : float, default=0.0
        Stop when the squared centre shift is at most ``tol`` (0: until nothing moves).
    decimals : int, default=2
        Fixed-point precision 10^-decimals of the features.
    dp_epsilon : float or None, default=None
        If set, every owner adds Gaussian noise to its per-iteration sums and counts so the
        whole run is (dp_epsilon, dp_delta)-DP per customer (:mod:`cipherseg.protocols.dp`).
    dp_delta : float, default=1e-6
    dp_bounds : (lower, upper) or None
        Public per-feature bounds (required with DP); records are clipped into them.
    mode : {"threshold", "plain"}, default="threshold"
        "plain" aggregates in the clear (the federated baseline for benchmarks only).
    params : ThresholdParams or None
        Threshold scheme parameters (default 128-bit set).
    random_state : int or None
        Seeds the parties' sampling choices (k-means++ picks, data-independent centres) for
        reproducible runs; ``None``: OS CSPRNG. Keys, encryption, smudging and DP noise always
        come from the OS CSPRNG, whatever the seed.

    Attributes
    ----------
    cluster_centers_, init_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), owners' labels in input order
    n_iter_ : int
    n_features_in_ : int
    result_ : JointResult (traffic, timings, the manager's log)
    dp_epsilon_spent_ : float or None

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> owners = [rng.normal([0, 0], .2, (40, 2)), rng.normal([4, 4], .2, (40, 2))]
    >>> model = JointKMeans(n_clusters=2, random_state=0).fit(owners)
    >>> sorted(np.bincount(model.labels_).tolist()), model.predict([[4.1, 3.9]]).shape
    ([40, 40], (1,))
    """

    def __init__(self, n_clusters: int = 8, *, init: str | npt.ArrayLike = "k-means++",
                 max_iter: int = 100, tol: float = 0.0, decimals: int = 2,
                 dp_epsilon: float | None = None, dp_delta: float = 1e-6,
                 dp_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 mode: str = "threshold", params: ThresholdParams | None = None,
                 random_state: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.decimals = decimals
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_bounds = dp_bounds
        self.mode = mode
        self.params = params
        self.random_state = random_state

    def fit(self, X: Sequence[npt.ArrayLike] | npt.ArrayLike, y: Any = None, *,
            owners: npt.ArrayLike | None = None) -> JointKMeans:
        """Fit on a list of per-owner arrays, or on one array with ``owners`` (owner index
        of each row)."""
        parts, order = _split_owners(X, owners)
        if not isinstance(self.n_clusters, int) or self.n_clusters < 1:
            raise ParameterError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        total = sum(p.shape[0] for p in parts)
        if total < self.n_clusters:
            raise ValidationError(f"{total} samples cannot form {self.n_clusters} clusters")
        dp = None
        if self.dp_epsilon is not None:
            if self.dp_bounds is None:
                raise ParameterError("dp_epsilon needs public dp_bounds=(lower, upper)")
            lower, upper = self.dp_bounds
            dp = DPConfig(float(self.dp_epsilon), float(self.dp_delta), int(self.max_iter),
                          tuple(lower), tuple(upper))
        init = self.init
        if dp is not None and isinstance(init, str) and init == "k-means++":
            init = "random"
        result = run_joint_kmeans(parts, self.n_clusters, params=self.params, mode=self.mode,
                                  init=init, max_iter=self.max_iter, tol=self.tol,
                                  decimals=self.decimals, dp=dp, random_state=self.random_state)
        labels = np.concatenate(result.labels)
        self.labels_ = np.empty_like(labels)
        self.labels_[order] = labels
        self.cluster_centers_ = result.centroids
        self.init_centers_ = result.init_centres
        self.n_iter_ = result.n_iter
        self.n_features_in_ = parts[0].shape[1]
        self.result_ = result
        self.dp_epsilon_spent_ = result.dp_epsilon_spent
        return self

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Nearest released centroid for each row of X."""
        check_is_fitted(self, "cluster_centers_")
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise ValidationError(f"X must have shape (n, {self.n_features_in_})")
        return assign(arr, self.cluster_centers_)


def _split_owners(X: Sequence[npt.ArrayLike] | npt.ArrayLike, owners: npt.ArrayLike | None
                  ) -> tuple[list[npt.NDArray[np.float64]], npt.NDArray[np.int64]]:
    if owners is None:
        if not isinstance(X, (list, tuple)):
            raise ValidationError("pass a list of per-owner arrays, or an array and `owners`")
        parts = [np.asarray(p, dtype=np.float64) for p in X]
        order = np.arange(sum(p.shape[0] for p in parts))
    else:
        arr = np.asarray(X, dtype=np.float64)
        who = np.asarray(owners)
        if who.shape != (arr.shape[0],):
            raise ValidationError("`owners` needs one owner index per row of X")
        groups = [np.flatnonzero(who == g) for g in np.unique(who)]
        parts = [arr[g] for g in groups]
        order = np.concatenate(groups)
    if not parts or any(p.ndim != 2 for p in parts) or len({p.shape[1] for p in parts}) != 1:
        raise ValidationError("every owner's data must be 2-D with the same number of features")
    return parts, order
