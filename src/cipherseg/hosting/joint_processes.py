"""Protocol 4.2 (joint k-means) with each party in its own child process — the manager, the
compute centre and every owner — over the generic process pipes
(:class:`cipherseg.transport.pipes.PartyProcess`, built by the factories of
:mod:`cipherseg.protocols.joint.hosted`) and the one router of the party contract
(:func:`cipherseg.protocols.delivery.deliver`, a thread per party so the children compute at
the same time). Owners load their data inside their own process; labels, the manager's log and
every party's timings come back as the children's JSON status once they have finished.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ProtocolError
from cipherseg.progress import Progress
from cipherseg.protocols.delivery import deliver
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.hosted import log_from_json
from cipherseg.protocols.joint.runner import JointResult, joint_traffic, joint_validated
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing
from cipherseg.schemes.threshold import ThresholdParams
from cipherseg.transport.pipes import PartyProcess

__all__ = ["OwnerFactory", "run_joint_kmeans_processes"]

OwnerFactory = Callable[[int], npt.NDArray[np.float64]]
_HOSTED = "cipherseg.protocols.joint.hosted"


class _Reporting:
    """The manager's process, reporting its progress after each message it handles (from the
    manager's delivery thread, so its pipe is never used by two threads at once)."""

    def __init__(self, process: PartyProcess, progress: Progress) -> None:
        self.process, self.progress = process, progress
        self.name = process.name
        self._last: list[Any] | None = None

    def handle(self, sender: str, message: Message) -> Outgoing:
        return [(dst, Message.from_bytes(data))
                for dst, data in self.handle_bytes(sender, message.to_bytes())]

    def handle_bytes(self, sender: str, data: bytes) -> list[tuple[str, bytes]]:
        out = self.process.handle_bytes(sender, data)
        state = self.process.hello().get("progress")
        if state and state != self._last:
            self._last = state
            self.progress(str(state[0]), int(state[1]), int(state[2]))
        return out


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
    progress: Progress | None = None,
) -> JointResult:
    """Run protocol 4.2 with each party in its own child process; parties exchange only
    message bytes, routed by this process. ``owner_data(party_id)`` builds an owner's data
    *inside* that owner's process (it must be picklable, e.g. a module-level function or a
    ``functools.partial`` of one, importable by a fresh interpreter); it reaches the child over
    its stdin, never its command line. ``progress(stage, done, total)`` is called as the
    manager advances. See :class:`~cipherseg.protocols.joint.JointKMeans` for the parameters.
    """
    manager_kwargs, seeds = joint_validated(n_owners, n_features, n_clusters, params=params,
                                            mode=mode, init=init, max_iter=max_iter, tol=tol,
                                            decimals=decimals, dp=dp, random_state=random_state)
    owner_ids = list(range(1, n_owners + 1))
    processes = [PartyProcess.of(f"{_HOSTED}:manager", manager_kwargs, name=jm.MANAGER,
                                 label="manager"),
                 PartyProcess.of(f"{_HOSTED}:centre", name=jm.CENTRE, label="compute centre")]
    processes += [PartyProcess.of(f"{_HOSTED}:owner", {"party_id": i, "data": owner_data,
                                                        "random_state": seeds[i]},
                                  name=jm.owner_name(i), label=jm.owner_name(i))
                  for i in owner_ids]
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(processes)) as pool:
        for process in processes:
            stack.callback(process.__exit__)
        # Start every child at once; each has built its party (an owner: loaded its data)
        # when its hello arrives, before the protocol's clock starts.
        for future in [pool.submit(p.__enter__) for p in processes]:
            future.result()
        manager = processes[0]
        parties: dict[str, Any] = {p.name: p for p in processes}
        if progress is not None:
            parties[jm.MANAGER] = _Reporting(manager, progress)
        traffic = joint_traffic()
        start = time.perf_counter()
        first = manager.start()
        traffic.seconds[jm.MANAGER]["keygen"] += time.perf_counter() - start
        deliver(parties, [(jm.MANAGER, dst, m) for dst, m in first], traffic, concurrent=True)
        wall = time.perf_counter() - start
        status = {p.name: p.hello() for p in processes}
        for stopping in [pool.submit(p.__exit__) for p in processes]:  # all at once
            stopping.result()
    unfinished = sorted(name for name, s in status.items() if not s.get("finished"))
    if unfinished:
        raise ProtocolError("the joint k-means session ended before every party finished: "
                            f"{', '.join(unfinished)}")
    m = status[jm.MANAGER]
    stage_seconds = dict(m["stage_seconds"])
    stage_seconds["wall_total"] = wall
    return JointResult(
        centroids=np.asarray(m["centroids"], dtype=np.float64),
        init_centres=np.asarray(m["init_centres"], dtype=np.float64),
        labels=[np.asarray(status[jm.owner_name(i)]["labels"], dtype=np.int64)
                for i in owner_ids],
        n_iter=int(m["n_iter"]), traffic=traffic, stage_seconds=stage_seconds,
        party_timings={name: dict(s["timings"]) for name, s in status.items()},
        log=log_from_json(m["log"]), mode=mode, dp=dp,
    )
