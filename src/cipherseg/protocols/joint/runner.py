"""Protocol 4.2 (joint k-means): running the parties — in this process
(:func:`run_joint_kmeans`, through the one in-process router of the party contract,
:func:`cipherseg.protocols.delivery.deliver`; messages still cross as bytes) or each in its
own process (:func:`run_joint_kmeans_processes`) — with per-party traffic and timing
statistics per protocol stage (:class:`~cipherseg.protocols.delivery.Traffic`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from cipherseg.errors import ProtocolError, ValidationError
from cipherseg.progress import Progress
from cipherseg.protocols.delivery import Traffic, deliver
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.joint.manager import JointManager, ManagerLog
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.joint.session import STAGES, stage_of
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing
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


def _merge(into: Traffic, other: Traffic) -> None:
    """Add one party process's traffic to the run's."""
    for mine, theirs in ((into.sent, other.sent), (into.received, other.received),
                         (into.seconds, other.seconds), (into.cpu, other.cpu)):
        for party, stages in theirs.items():
            for stage, n in stages.items():
                mine[party][stage] += n
    into.messages += other.messages


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
        stats = joint_traffic()

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
                start, cpu = time.perf_counter(), time.process_time()
                try:
                    out = party.handle(s, message)
                except NotReady:
                    waiting.append((s, d))
                    continue
                stats.handled(name, message, time.perf_counter() - start,
                              time.process_time() - cpu)
                send(out)
                report()
                batch = waiting + batch
                waiting = []
        results.put((name, "ok", _summary(party, stats)))
    except BaseException:  # report to the parent, which raises
        results.put((name, "error", traceback.format_exc()))


def _finished(party: Any) -> bool:
    return bool(getattr(party, "done", False) or getattr(party, "closed", False))


def _summary(party: Any, stats: Traffic) -> dict[str, Any]:
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
    progress: Progress | None = None,
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
    traffic = joint_traffic()
    for s in summaries.values():
        _merge(traffic, s["traffic"])
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
