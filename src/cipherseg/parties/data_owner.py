"""The data owner: holds the CKKS secret key and drives protocol 4.1 as the client.

The owner encrypts its (normalised) customer features once, then only ever decrypts scores,
D² values and aggregates; see :mod:`cipherseg.protocols.kmeans_outsourced` for the message
sequence and the leakage of each party.

>>> import numpy as np
>>> from cipherseg.parties.compute_centre import ComputeCentre
>>> from cipherseg.transport.inprocess import InProcessTransport
>>> rng = np.random.default_rng(0)
>>> X = np.vstack([rng.normal(-.5, .1, (20, 2)), rng.normal(.5, .1, (20, 2))])
>>> centre = ComputeCentre(random_state=0)
>>> owner = DataOwner(random_state=0)
>>> run = owner.run_kmeans(X, 2, InProcessTransport(centre.handle_bytes), max_iter=10, tol=1e-4)
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
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.engine.base import Executor, chunk_indices
from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import CipherSegError, ProtocolError
from cipherseg.progress import Progress
from cipherseg.protocols import kmeans_outsourced as p
from cipherseg.protocols import owner_ops
from cipherseg.protocols.lloyd import update_centres
from cipherseg.protocols.messages import Message
from cipherseg.protocols.owner_checks import (
    check_counts,
    check_features,
    check_initial_centres,
    check_masked_record,
    check_sums,
    require_finite,
    score_bound,
)
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext
from cipherseg.transport.base import Transport

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
                   transport: Transport, *, max_iter: int, tol: float,
                   init: npt.NDArray[np.float64] | None = None,
                   progress: Progress | None = None) -> KMeansRun:
        """Encrypted k-means of ``X`` (already normalised to |x| ≤ 1) through ``transport``.

        Every decrypted reply is checked before the owner acts on it
        (:mod:`cipherseg.protocols.owner_checks`); a reply no centre following the protocol
        could produce raises :class:`~cipherseg.errors.ProtocolError`."""
        check_features(X)
        clock = _Clock()
        notify = progress or (lambda stage, done, total: None)
        t0 = time.perf_counter()
        owner = CkksSecretContext.generate(self.params)
        clock.add("owner", "keygen", t0)
        key = f"owner-{uuid.uuid4().hex}"
        self._executor.put_state(key, lambda: owner)
        session = uuid.uuid4().hex
        try:
            return self._run(owner, key, session, X, n_clusters, transport, max_iter, tol, init,
                             clock, notify)
        except CipherSegError:
            self._close_quietly(transport, session)
            raise
        finally:
            self._executor.drop_state(key)

    @staticmethod
    def _close_quietly(transport: Transport, session: str) -> None:
        """After a refused reply, ask the centre to drop the session's ciphertexts now rather
        than when it expires; the centre refuses a Close in the middle of k-means++."""
        with contextlib.suppress(CipherSegError, OSError):
            transport.exchange(p.Close(protocol_version=p.VERSION, session_id=session, round=0))

    # ------------------------------------------------------------------------------------
    def _run(self, owner: CkksSecretContext, key: str, session: str,
             X: npt.NDArray[np.float64], k: int, transport: Transport,
             max_iter: int, tol: float, init: npt.NDArray[np.float64] | None, clock: _Clock,
             notify: Progress) -> KMeansRun:
        n, d = X.shape
        slots = self.params.slot_count
        sizes = [min(slots, n - start) for start in range(0, n, slots)]
        n_blocks = len(sizes)
        rnd = 0
        start_to_centre, start_to_owner = transport.stats.snapshot()

        def send(msg_cls: type[Message], stage: str, **fields: Any) -> Any:
            nonlocal rnd
            rnd += 1
            t = time.perf_counter()
            reply = transport.exchange(msg_cls(protocol_version=p.VERSION, session_id=session,
                                              round=rnd, **fields))
            clock.add("centre", stage, t)
            return reply

        def par(fn: Callable[[Any], list[Any]], make: Callable[[list[int]], Any]) -> list[Any]:
            chunks = chunk_indices(n_blocks, self._executor.n_workers)
            return [r for part in self._executor.map(fn, [make(c) for c in chunks]) for r in part]

        # Upload: column packing, one ciphertext per (block, feature).
        t = time.perf_counter()
        notify("encrypt", 0, n_blocks)
        vectors = [X[b * slots:b * slots + sizes[b], f] for b in range(n_blocks) for f in range(d)]
        items = chunk_indices(len(vectors), self._executor.n_workers)
        parts = self._executor.map(owner_ops.encrypt_task,
                                   [(key, [vectors[i] for i in c]) for c in items])
        features = tuple(b for part in parts for b in part)
        clock.add("owner", "encrypt", t)
        notify("encrypt", n_blocks, n_blocks)
        send(p.Upload, "upload", public_context=owner.public_bytes(), n_samples=n,
             n_features=d, n_clusters=k, block_sizes=tuple(sizes), features=features)
        totals = X.sum(axis=0)
        sq_total = float(np.einsum("ij,ij->", X, X))
        records_norm = float(np.linalg.norm(X, axis=1).max()) if n else 0.0  # bounds scores

        # Initial centres.
        if init is None:
            init_centers, c_bytes = self._kmeans_pp(owner, key, k, d, sizes, send, par, clock,
                                                    notify, records_norm)
        else:
            init_centers = np.asarray(init, dtype=np.float64)
            c_bytes = self._encrypt_centroids(owner, init_centers, clock)
        bytes_mark = transport.stats.snapshot()

        # Lloyd iterations, mirroring scikit-learn's loop (labels then centres, strict
        # convergence on unchanged labels, else squared centre shift ≤ tol).
        centers = init_centers.copy()
        labels_old = np.full(n, -1, dtype=np.int64)
        per_iter: list[int] = []
        strict = False
        labels = labels_old
        chosen = np.zeros(n)
        it = 0
        for it in range(max_iter):
            notify("iterate", it, max_iter)
            if it > 0:  # the first iteration uses the initial centres already encrypted
                c_bytes = self._encrypt_centroids(owner, centers, clock)
            onehots: list[bytes] = []
            labels, chosen = self._assign(key, sizes, k, c_bytes, centers, records_norm,
                                          send, par, clock,
                                          with_onehots=True, assignments_out=onehots)
            sums_msg = send(p.Assignments, "sums", onehots=tuple(onehots))
            t = time.perf_counter()
            new_centers = self._update(owner, sums_msg, X, centers, labels, totals, k)
            clock.add("owner", "update", t)
            shift = float(((new_centers - centers) ** 2).sum())
            centers = new_centers
            now = transport.stats.snapshot()
            per_iter.append(sum(now) - sum(bytes_mark))
            bytes_mark = now
            if np.array_equal(labels, labels_old):
                strict = True
                break
            if shift <= tol:
                break
            labels_old = labels
        if not strict:
            c_bytes = self._encrypt_centroids(owner, centers, clock)
            labels, chosen = self._assign(key, sizes, k, c_bytes, centers, records_norm,
                                          send, par, clock,
                                          with_onehots=False, assignments_out=[])
        notify("iterate", it + 1, it + 1)
        c0 = centers[0]
        inertia = sq_total + n * float(c0 @ c0) - 2.0 * float(c0 @ totals) + float(chosen.sum())
        send(p.Close, "close")
        return KMeansRun(
            labels=labels, centers=centers, init_centers=init_centers,
            inertia=max(inertia, 0.0), n_iter=it + 1,
            seconds={party: dict(v) for party, v in clock.seconds.items()},
            bytes_to_centre=transport.stats.bytes_to_server - start_to_centre,
            bytes_to_owner=transport.stats.bytes_to_client - start_to_owner,
            bytes_per_iteration=per_iter, n_blocks=n_blocks,
        )

    def _encrypt_centroids(self, owner: CkksSecretContext,
                           centers: npt.NDArray[np.float64], clock: _Clock) -> tuple[bytes, ...]:
        t = time.perf_counter()
        out = tuple(owner.encrypt_to_bytes(float(v)) for v in centers.ravel())
        clock.add("owner", "encrypt_centroids", t)
        return out

    def _assign(self, key: str, sizes: list[int], k: int, c_bytes: tuple[bytes, ...],
                centers: npt.NDArray[np.float64], records_norm: float, send: Any, par: Any,
                clock: _Clock, *,
                with_onehots: bool, assignments_out: list[bytes]
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        scores_msg = send(p.Centroids, "scores", centroids=c_bytes)
        t = time.perf_counter()
        m = scores_msg.n_scores
        per_block = [tuple(scores_msg.scores[b * m:(b + 1) * m]) for b in range(len(sizes))]
        bound = score_bound(records_norm, float(np.linalg.norm(centers, axis=1).max()))
        results = par(owner_ops.assign_task,
                      lambda c: (key, [per_block[b] for b in c], [sizes[b] for b in c],
                                 with_onehots, bound))
        labels = np.concatenate([r[0] for r in results])
        chosen = np.concatenate([r[1] for r in results])
        for r in results:
            assignments_out.extend(r[2])
        clock.add("owner", "assign", t)
        return labels, chosen

    def _update(self, owner: CkksSecretContext, msg: p.Sums, X: npt.NDArray[np.float64],
                centers: npt.NDArray[np.float64], labels: npt.NDArray[np.int64],
                totals: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
        n, d = X.shape
        if len(msg.sums) != (k - 1) * d or len(msg.counts) != k - 1:
            raise ProtocolError(f"the compute centre sent {len(msg.sums)} sums and "
                                f"{len(msg.counts)} counts; expected {(k - 1) * d} and {k - 1}")
        sums = np.array([owner.decrypt_bytes(b).sum() for b in msg.sums]).reshape(k - 1, d)
        counts = check_counts(np.array([owner.decrypt_bytes(b).sum() for b in msg.counts]),
                              labels, k)
        all_sums = np.vstack([totals - sums.sum(axis=0), sums]) if k > 1 else totals[None, :]
        all_counts = np.concatenate([[n - counts.sum()], counts]) if k > 1 else np.array([n])
        check_sums(all_sums, all_counts)
        # An empty cluster takes the record farthest from its centre, as in scikit-learn: the
        # owner holds its records, so this needs nothing from the centre.
        return update_centres(X, labels, centers, all_sums, all_counts)

    def _kmeans_pp(self, owner: CkksSecretContext, key: str, k: int, d: int, sizes: list[int],
                   send: Any, par: Any, clock: _Clock, notify: Progress, records_norm: float
                   ) -> tuple[npt.NDArray[np.float64], tuple[bytes, ...]]:
        n_blocks = len(sizes)
        reply = send(p.InitStart, "init")
        for m in range(1, k + 1):
            notify("init", m - 1, k)
            if not isinstance(reply, p.MaskedRecord):
                raise ProtocolError(f"expected MaskedRecord, got {type(reply).__name__}")
            t = time.perf_counter()
            values = [float(owner.decrypt_bytes(b)[reply.slot]) for b in reply.masked]
            check_masked_record(np.array(values))
            centre = tuple(owner.encrypt_to_bytes(v) for v in values)
            clock.add("owner", "init", t)
            reply = send(p.NewCentre, "init", centre=centre)
            if m == k:
                break
            t = time.perf_counter()
            if reply.n_scores:
                sc = reply.n_scores
                per_block = [tuple(reply.scores[b * sc:(b + 1) * sc]) for b in range(n_blocks)]
                bound = score_bound(records_norm, records_norm)  # centres are records
                mins = tuple(par(owner_ops.min_scores_task,
                                 lambda c, pb=per_block, bd=bound: (key, [pb[b] for b in c],
                                                                    [sizes[b] for b in c], bd)))
            else:
                mins = ()
            clock.add("owner", "init", t)
            shuffled = send(p.MinScores, "init", min_scores=mins)
            t = time.perf_counter()
            blocks = par(owner_ops.decrypt_task,
                         lambda c, sh=shuffled: (key, [sh.d2[b] for b in c],
                                                 [sh.block_sizes[b] for b in c]))
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
            clock.add("owner", "init", t)
            reply = send(p.Pick, "init", shuffled_block=block, slot=pos - int(starts[block]))
        if not isinstance(reply, p.InitDone):
            raise ProtocolError(f"expected InitDone, got {type(reply).__name__}")
        t = time.perf_counter()
        init = np.array([owner.decrypt_bytes(b)[0] for b in reply.centres]).reshape(k, d)
        check_initial_centres(init)
        clock.add("owner", "init", t)
        notify("init", k, k)
        # The centre already holds the initial centres: an empty Centroids message reuses them.
        return init, ()
