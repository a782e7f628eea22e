"""Protocol 4.2 (joint k-means): running the parties in this process (:func:`run_joint_kmeans`,
through the one router of the party contract, :func:`cipherseg.protocols.delivery.deliver`;
messages still cross as bytes), with per-party traffic and timing statistics per protocol
stage (:class:`~cipherseg.protocols.delivery.Traffic`). Each party in its own process:
:func:`cipherseg.hosting.joint_processes.run_joint_kmeans_processes` (same router, the
parties behind process pipes).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.protocols.delivery import Traffic, deliver
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.joint.manager import JointManager, ManagerLog
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.joint.session import STAGES, stage_of
from cipherseg.schemes.threshold import ThresholdParams


def one_blas_thread() -> threadpool_limits:
    """Limit BLAS to one thread (a context manager, or for good when not used as one).

    The scheme's small matrix products (c0 and partial decryptions) take 0.1 ms; a second
    OpenBLAS thread gains nothing there but spins between calls, which on this 2-vCPU machine
    measured a whole extra core busy and the owners' own k-means work 5-10 % slower.
    """
    return threadpool_limits(limits=1, user_api="blas")


def joint_traffic() -> Traffic:
    """Traffic counted per protocol stage (keygen, init, iterations, final)."""
    return Traffic(stage_of=stage_of)


# ====================================================================== results and runs
@dataclass
class JointResult:
    """Outcome of one joint k-means session (what an evaluator sees; labels stay per owner)."""

    centroids: npt.NDArray[np.float64]
    init_centres: npt.NDArray[np.float64]
    labels: list[npt.NDArray[np.int64]]
    n_iter: int
    traffic: Traffic
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


def stage_seconds(marks: dict[str, float], end: float) -> dict[str, float]:
    """Seconds of each stage the manager marked, the last one until ``end``."""
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
    parties: dict[str, JointOwner | JointManager | JointCentre] = {
        manager.name: manager, centre.name: centre}
    parties.update({o.name: o for o in owners})
    stats = joint_traffic()
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
        traffic=stats, stage_seconds=stage_seconds(manager.stage_marks, end),
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
def joint_validated(n_owners: int, n_features: int, n_clusters: int, *,
                    params: ThresholdParams | None, mode: str, init: str | npt.ArrayLike,
                    max_iter: int, tol: float, decimals: int, dp: DPConfig | None,
                    random_state: int | None) -> tuple[dict[str, Any], list[int | None]]:
    """The manager's keyword arguments for a session with each party in its own process
    (:func:`cipherseg.hosting.joint_processes.run_joint_kmeans_processes`), checked here by
    building one before any process starts, and the parties' seeds (manager first)."""
    init_name, init_centres = _split_init(init)
    seeds = _seeds(random_state, n_owners + 1)
    kwargs: dict[str, Any] = dict(
        owner_ids=list(range(1, n_owners + 1)), n_features=n_features, n_clusters=n_clusters,
        params=params, mode=mode, init=init_name, init_centres=init_centres,
        max_iter=max_iter, tol=tol, decimals=decimals, dp=dp, random_state=seeds[0])
    JointManager(**kwargs)
    return kwargs, seeds
