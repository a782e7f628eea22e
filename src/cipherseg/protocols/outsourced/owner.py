"""The data owner of protocol 4.1: holds the CKKS secret key and drives the sequence as client.

The owner encrypts its (normalised) customer features once, then only ever decrypts scores,
D² values and aggregates; see :mod:`cipherseg.protocols.outsourced` for the message sequence
and the leakage of each party. It talks to the centre through a
:class:`~cipherseg.protocols.party.Link` and names the reply it expects at every step
(``link.request(message, expect=...)``): a reply of another type or session raises
:class:`~cipherseg.errors.ProtocolError`, and so does a decrypted reply that no centre
following the protocol could produce (:mod:`cipherseg.protocols.outsourced.owner_checks`).

>>> import numpy as np
>>> from cipherseg.protocols.outsourced.centre import ComputeCentre
>>> from cipherseg.protocols.party import PartyLink
>>> rng = np.random.default_rng(0)
>>> X = np.vstack([rng.normal(-.5, .1, (20, 2)), rng.normal(.5, .1, (20, 2))])
>>> centre = ComputeCentre(random_state=0)
>>> owner = DataOwner(random_state=0)
>>> run = owner.run_kmeans(X, 2, PartyLink(centre, sender="owner"), max_iter=10, tol=1e-4)
>>> sorted(np.bincount(run.labels).tolist())
[20, 20]
"""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import CipherSegError, ProtocolError
from cipherseg.progress import Progress
from cipherseg.protocols.lloyd import update_centres
from cipherseg.protocols.messages import Message
from cipherseg.protocols.outsourced import messages as p
from cipherseg.protocols.outsourced import owner_ops
from cipherseg.protocols.outsourced.owner_checks import (
    check_counts,
    check_features,
    check_initial_centres,
    check_masked_record,
    check_sums,
    require_finite,
    score_bound,
)
from cipherseg.protocols.party import Link
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext

R = TypeVar("R", bound=Message)

LEAKAGE_4_1 = {
    "compute_centre": "sizes (customers, features, blocks, k, iterations) and the indices of "
                      "the records picked as initial centres; no plaintext value",
    "data_owner": "per-customer score differences, hence labels, centroids and cluster sizes "
                  "(its own data); during k-means++ scaled D² in secretly permuted blocks, the "
                  "slot of each picked record and its masked values",
}


@dataclass
class KMeansRun:
    """What one encrypted k-means run returns to the owner (normalised units)."""

    labels: npt.NDArray[np.int64]
    centers: npt.NDArray[np.float64]
    init_centers: npt.NDArray[np.float64]
    inertia: float
    n_iter: int
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_to_centre: int = 0
    bytes_to_owner: int = 0
    bytes_per_iteration: list[int] = field(default_factory=list)
    n_blocks: int = 0


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {"owner": defaultdict(float),
                                                     "centre": defaultdict(float)}

    def add(self, party: str, stage: str, t0: float) -> None:
        self.seconds[party][stage] += time.perf_counter() - t0


@dataclass
class _Assigned:
    """The owner's reading of one Scores reply: labels, each record's chosen score, and the
    encrypted one-hots of clusters 1..k-1 per block (when asked for)."""

    labels: npt.NDArray[np.int64]
    chosen: npt.NDArray[np.float64]
    onehots: tuple[bytes, ...]


class _Session:
    """One run's conversation with the centre: the link, the session id, the round counter,
    the owner's key (by executor key) and its block work."""

    def __init__(self, link: Link, owner: CkksSecretContext, key: str, executor: Executor,
                 sizes: list[int], clock: _Clock) -> None:
        self.link, self.owner, self.key, self.executor = link, owner, key, executor
        self.sizes, self.clock = sizes, clock
        self.id = uuid.uuid4().hex
        self.round = 0

    def request(self, message_type: type[Message], stage: str, expect: type[R],
                **fields: Any) -> R:
        """Send the next message of the session and return the centre's reply, which must be
        an ``expect``; the centre's time is counted under ``stage``."""
        self.round += 1
        t = time.perf_counter()
        reply = self.link.request(message_type(protocol_version=p.VERSION, session_id=self.id,
                                               round=self.round, **fields), expect=expect)
        self.clock.add("centre", stage, t)
        return reply

    def per_block(self, fn: Callable[[Any], list[Any]],
                  task: Callable[[list[int]], Any]) -> list[Any]:
        """``fn`` over every block, in chunks across the owner's workers; ``task(blocks)``
        makes a chunk's argument. Results in block order."""
        chunks = chunk_indices(len(self.sizes), self.executor.n_workers)
        return [r for part in self.executor.map(fn, [task(c) for c in chunks]) for r in part]

    def close_quietly(self) -> None:
        """After a refused reply, ask the centre to drop the session's ciphertexts now rather
        than when it expires; the centre refuses a Close in the middle of k-means++."""
        with contextlib.suppress(CipherSegError, OSError):
            self.link.exchange(p.Close(protocol_version=p.VERSION, session_id=self.id,
                                       round=0))


def _split_scores(reply: p.Scores, n_blocks: int) -> list[tuple[bytes, ...]]:
    m = reply.n_scores
    if len(reply.scores) != m * n_blocks:
        raise ProtocolError(f"the compute centre sent {len(reply.scores)} scores for "
                            f"{n_blocks} blocks × {m}")
    return [tuple(reply.scores[b * m:(b + 1) * m]) for b in range(n_blocks)]


class DataOwner:
    """Client side of protocol 4.1.

    Parameters
    ----------
    params:
        CKKS parameters; default: N=8192 with the depth-1 chain (60, 40, 60).
    executor:
        Where the owner's block work (decrypt, argmin, encrypt) runs; default this process.
    random_state:
        Seed for the owner's sampling in k-means++. ``None``: the OS CSPRNG.
    """

    def __init__(self, params: CkksParams | None = None, executor: Executor | None = None,
                 random_state: int | None = None) -> None:
        self.params = params or CkksParams.for_depth(1)
        self._executor = executor if executor is not None else LocalExecutor()
        seed = random_state if random_state is not None else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)

    def run_kmeans(self, X: npt.NDArray[np.float64], n_clusters: int,
                   link: Link, *, max_iter: int, tol: float,
                   init: npt.NDArray[np.float64] | None = None,
                   progress: Progress | None = None) -> KMeansRun:
        """Encrypted k-means of ``X`` (already normalised to |x| ≤ 1) with the centre at the
        other end of ``link``.

        Every reply is checked — its type and session, then its decrypted values
        (:mod:`cipherseg.protocols.outsourced.owner_checks`) — before the owner acts on it;
        a reply no centre following the protocol could produce raises
        :class:`~cipherseg.errors.ProtocolError`."""
        check_features(X)
        clock = _Clock()
        notify = progress or (lambda stage, done, total: None)
        t0 = time.perf_counter()
        owner = CkksSecretContext.generate(self.params)
        clock.add("owner", "keygen", t0)
        key = f"owner-{uuid.uuid4().hex}"
        self._executor.put_state(key, lambda: owner)
        slots = self.params.slot_count
        sizes = [min(slots, len(X) - start) for start in range(0, len(X), slots)]
        session = _Session(link, owner, key, self._executor, sizes, clock)
        try:
            return self._run(session, X, n_clusters, max_iter, tol, init, notify)
        except CipherSegError:
            session.close_quietly()
            raise
        finally:
            self._executor.drop_state(key)

    # ------------------------------------------------------------------------------------
    def _run(self, s: _Session, X: npt.NDArray[np.float64], k: int, max_iter: int, tol: float,
             init: npt.NDArray[np.float64] | None, notify: Progress) -> KMeansRun:
        n, d = X.shape
        stats = s.link.stats
        start_to_centre, start_to_owner = stats.snapshot()

        # Upload: column packing, one ciphertext per (block, feature).
        ack = s.request(p.Upload, "upload", p.UploadAck, public_context=s.owner.public_bytes(),
                        n_samples=n, n_features=d, n_clusters=k, block_sizes=tuple(s.sizes),
                        features=self._encrypt_features(s, X, notify))
        if ack.n_blocks != len(s.sizes):
            raise ProtocolError(f"the compute centre acknowledged {ack.n_blocks} blocks; "
                                f"{len(s.sizes)} were uploaded")
        totals = X.sum(axis=0)
        sq_total = float(np.einsum("ij,ij->", X, X))
        records_norm = float(np.linalg.norm(X, axis=1).max()) if n else 0.0  # bounds scores

        # Initial centres: k-means++ with secure selection, or the caller's.
        if init is None:
            init_centers = self._kmeans_pp(s, k, d, notify, records_norm)
            c_bytes: tuple[bytes, ...] = ()  # the centre holds them: an empty Centroids
        else:
            init_centers = np.asarray(init, dtype=np.float64)
            c_bytes = self._encrypt_centroids(s, init_centers)
        bytes_mark = stats.snapshot()

        # Lloyd iterations, mirroring scikit-learn's loop (labels then centres, strict
        # convergence on unchanged labels, else squared centre shift ≤ tol).
        centers = init_centers.copy()
        labels_old = np.full(n, -1, dtype=np.int64)
        per_iter: list[int] = []
        strict = False
        assigned = _Assigned(labels_old, np.zeros(n), ())
        it = 0
        for it in range(max_iter):
            notify("iterate", it, max_iter)
            if it > 0:  # the first iteration uses the initial centres already encrypted
                c_bytes = self._encrypt_centroids(s, centers)
            scores = s.request(p.Centroids, "scores", p.Scores, centroids=c_bytes)
            assigned = self._assign(s, scores, k, centers, records_norm, with_onehots=True)
            sums = s.request(p.Assignments, "sums", p.Sums, onehots=assigned.onehots)
            t = time.perf_counter()
            new_centers = self._update(s, sums, X, centers, assigned.labels, totals, k)
            s.clock.add("owner", "update", t)
            shift = float(((new_centers - centers) ** 2).sum())
            centers = new_centers
            now = stats.snapshot()
            per_iter.append(sum(now) - sum(bytes_mark))
            bytes_mark = now
            if np.array_equal(assigned.labels, labels_old):
                strict = True
                break
            if shift <= tol:
                break
            labels_old = assigned.labels
        if not strict:  # labels for the final centres
            scores = s.request(p.Centroids, "scores", p.Scores,
                               centroids=self._encrypt_centroids(s, centers))
            assigned = self._assign(s, scores, k, centers, records_norm, with_onehots=False)
        notify("iterate", it + 1, it + 1)
        c0 = centers[0]
        inertia = (sq_total + n * float(c0 @ c0) - 2.0 * float(c0 @ totals)
                   + float(assigned.chosen.sum()))
        s.request(p.Close, "close", p.CloseAck)
        return KMeansRun(
            labels=assigned.labels, centers=centers, init_centers=init_centers,
            inertia=max(inertia, 0.0), n_iter=it + 1,
            seconds={party: dict(v) for party, v in s.clock.seconds.items()},
            bytes_to_centre=stats.bytes_to_server - start_to_centre,
            bytes_to_owner=stats.bytes_to_client - start_to_owner,
            bytes_per_iteration=per_iter, n_blocks=len(s.sizes),
        )

    def _encrypt_features(self, s: _Session, X: npt.NDArray[np.float64],
                          notify: Progress) -> tuple[bytes, ...]:
        t = time.perf_counter()
        n_blocks, slots, d = len(s.sizes), self.params.slot_count, X.shape[1]
        notify("encrypt", 0, n_blocks)
        vectors = [X[b * slots:b * slots + s.sizes[b], f]
                   for b in range(n_blocks) for f in range(d)]
        items = chunk_indices(len(vectors), self._executor.n_workers)
        parts = self._executor.map(owner_ops.encrypt_task,
                                   [(s.key, [vectors[i] for i in c]) for c in items])
        features = tuple(b for part in parts for b in part)
        s.clock.add("owner", "encrypt", t)
        notify("encrypt", n_blocks, n_blocks)
        return features

    @staticmethod
    def _encrypt_centroids(s: _Session, centers: npt.NDArray[np.float64]) -> tuple[bytes, ...]:
        t = time.perf_counter()
        out = tuple(s.owner.encrypt_to_bytes(float(v)) for v in centers.ravel())
        s.clock.add("owner", "encrypt_centroids", t)
        return out

    @staticmethod
    def _assign(s: _Session, scores: p.Scores, k: int, centers: npt.NDArray[np.float64],
                records_norm: float, *, with_onehots: bool) -> _Assigned:
        """Labels (argmin over the decrypted score differences) and, for an Assignments
        message, the encrypted one-hots of clusters 1..k-1."""
        t = time.perf_counter()
        if scores.n_scores != k - 1:
            raise ProtocolError(f"the compute centre sent {scores.n_scores} scores per block; "
                                f"expected {k - 1}")
        per_block = _split_scores(scores, len(s.sizes))
        bound = score_bound(records_norm, float(np.linalg.norm(centers, axis=1).max()))
        results = s.per_block(owner_ops.assign_task,
                              lambda c: (s.key, [per_block[b] for b in c],
                                         [s.sizes[b] for b in c], with_onehots, bound))
        assigned = _Assigned(labels=np.concatenate([r[0] for r in results]),
                             chosen=np.concatenate([r[1] for r in results]),
                             onehots=tuple(b for r in results for b in r[2]))
        s.clock.add("owner", "assign", t)
        return assigned

    @staticmethod
    def _update(s: _Session, msg: p.Sums, X: npt.NDArray[np.float64],
                centers: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                totals: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
        n, d = X.shape
        if len(msg.sums) != (k - 1) * d or len(msg.counts) != k - 1:
            raise ProtocolError(f"the compute centre sent {len(msg.sums)} sums and "
                                f"{len(msg.counts)} counts; expected {(k - 1) * d} and {k - 1}")
        owner = s.owner
        sums = np.array([owner.decrypt_bytes(b).sum() for b in msg.sums]).reshape(k - 1, d)
        counts = check_counts(np.array([owner.decrypt_bytes(b).sum() for b in msg.counts]),
                              labels, k)
        all_sums = np.vstack([totals - sums.sum(axis=0), sums]) if k > 1 else totals[None, :]
        all_counts = np.concatenate([[n - counts.sum()], counts]) if k > 1 else np.array([n])
        check_sums(all_sums, all_counts)
        # An empty cluster takes the record farthest from its centre, as in scikit-learn: the
        # owner holds its records, so this needs nothing from the centre.
        return update_centres(X, labels, centers, all_sums, all_counts)

    def _kmeans_pp(self, s: _Session, k: int, d: int, notify: Progress,
                   records_norm: float) -> npt.NDArray[np.float64]:
        """k-means++ with secure selection: the centre picks the first record, then each
        round the owner turns scores into D², samples a shuffled slot, and the centre
        un-shuffles it; the owner sees each picked record masked only."""
        record = s.request(p.InitStart, "init", p.MaskedRecord)
        bound = score_bound(records_norm, records_norm)  # centres are records
        for m in range(1, k + 1):
            notify("init", m - 1, k)
            centre = self._unmask_and_encrypt(s, record)
            if m == k:
                done = s.request(p.NewCentre, "init", p.InitDone, centre=centre)
                break
            scores = s.request(p.NewCentre, "init", p.Scores, centre=centre)
            if scores.n_scores != m - 1:
                raise ProtocolError(f"the compute centre sent {scores.n_scores} scores per "
                                    f"block with {m} centres; expected {m - 1}")
            shuffled = s.request(p.MinScores, "init", p.ShuffledD2,
                                 min_scores=self._min_scores(s, scores, bound))
            block, slot = self._sample_d2(s, shuffled)
            record = s.request(p.Pick, "init", p.MaskedRecord, shuffled_block=block, slot=slot)
        t = time.perf_counter()
        if len(done.centres) != k * d:
            raise ProtocolError(f"the compute centre sent {len(done.centres)} initial centre "
                                f"ciphertexts; expected {k}×{d}")
        init = np.array([s.owner.decrypt_bytes(b)[0] for b in done.centres]).reshape(k, d)
        check_initial_centres(init)
        s.clock.add("owner", "init", t)
        notify("init", k, k)
        return init

    @staticmethod
    def _unmask_and_encrypt(s: _Session, record: p.MaskedRecord) -> tuple[bytes, ...]:
        """The picked record's masked values, re-encrypted for the centre to unmask."""
        t = time.perf_counter()
        values = [float(s.owner.decrypt_bytes(b)[record.slot]) for b in record.masked]
        check_masked_record(np.array(values))
        centre = tuple(s.owner.encrypt_to_bytes(v) for v in values)
        s.clock.add("owner", "init", t)
        return centre

    @staticmethod
    def _min_scores(s: _Session, scores: p.Scores, bound: float) -> tuple[bytes, ...]:
        """Per block, the encrypted min(0, s_1..s_{m-1}) (none with one centre)."""
        if not scores.n_scores:
            return ()
        t = time.perf_counter()
        per_block = _split_scores(scores, len(s.sizes))
        mins = tuple(s.per_block(owner_ops.min_scores_task,
                                 lambda c: (s.key, [per_block[b] for b in c],
                                            [s.sizes[b] for b in c], bound)))
        s.clock.add("owner", "init", t)
        return mins

    def _sample_d2(self, s: _Session, shuffled: p.ShuffledD2) -> tuple[int, int]:
        """A (shuffled block, slot) drawn with probability proportional to D²."""
        t = time.perf_counter()
        if len(shuffled.d2) != len(s.sizes) or sorted(shuffled.block_sizes) != sorted(s.sizes):
            raise ProtocolError("the compute centre's shuffled D² blocks do not match the "
                                "uploaded blocks")
        blocks = s.per_block(owner_ops.decrypt_task,
                             lambda c: (s.key, [shuffled.d2[b] for b in c],
                                        [shuffled.block_sizes[b] for b in c]))
        weights = np.concatenate(blocks)
        require_finite(weights, "D² values")
        weights = np.clip(weights, 0.0, None)
        total = weights.sum()
        if total > 0:
            pos = int(np.searchsorted(np.cumsum(weights), self._rng.uniform(0, total),
                                      side="right"))
            pos = min(pos, weights.size - 1)
        else:
            pos = int(self._rng.integers(weights.size))
        starts = np.cumsum([0, *shuffled.block_sizes])
        block = int(np.searchsorted(starts, pos, side="right") - 1)
        s.clock.add("owner", "init", t)
        return block, pos - int(starts[block])
