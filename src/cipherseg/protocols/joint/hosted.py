"""Protocol 4.2's parties as child processes build them (``python -m cipherseg.transport.pipes
cipherseg.protocols.joint.hosted:owner``, …; :mod:`cipherseg.hosting.joint_processes` starts
them): each factory builds its party *in* the child (an owner loads its own data there, key
shares are generated there) and wraps it as a :class:`HostedParty`, whose ``status()`` — JSON,
the only thing besides message bytes a child sends back — reports progress and, once the party
has finished, its results: labels (owners), the model and the manager's log (manager), and
every party's timings.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.joint.manager import JointManager, ManagerLog
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.joint.runner import one_blas_thread, stage_seconds
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Outgoing

__all__ = ["HostedParty", "centre", "log_from_json", "manager", "owner"]


class HostedParty:
    """One of 4.2's parties in its child process: the party contract, plus ``start()`` (the
    manager's) and a JSON ``status()``."""

    def __init__(self, party: JointOwner | JointManager | JointCentre) -> None:
        self.party = party
        self.name = party.name

    def handle(self, sender: str, message: Message) -> Outgoing:
        return self.party.handle(sender, message)

    def start(self) -> Outgoing:
        if not isinstance(self.party, JointManager):
            raise TypeError(f"{self.name} does not open sessions")
        return self.party.start()

    def finished(self) -> bool:
        party = self.party
        return bool(party.closed if isinstance(party, JointCentre) else party.done)

    def status(self) -> dict[str, Any]:
        party = self.party
        out: dict[str, Any] = {"pid": os.getpid(), "finished": self.finished()}
        if isinstance(party, JointManager):
            out["progress"] = list(party.progress_state())
        if not out["finished"]:
            return out
        out["timings"] = dict(party.timings)
        if isinstance(party, JointOwner):
            assert party.labels_ is not None
            out["labels"] = party.labels_.tolist()
        if isinstance(party, JointManager):
            assert party.centroids_ is not None and party.init_centres_ is not None
            marks = party.stage_marks
            out.update(centroids=party.centroids_.tolist(),
                       init_centres=party.init_centres_.tolist(), n_iter=party.n_iter_,
                       log=log_to_json(party.log),
                       stage_seconds=stage_seconds(
                           marks, marks.get("final", time.perf_counter())))
        return out


def manager(**kwargs: Any) -> HostedParty:
    """The manager (``kwargs`` as :class:`~cipherseg.protocols.joint.manager.JointManager`)."""
    one_blas_thread()  # for the life of this party's process (see there)
    return HostedParty(JointManager(**kwargs))


def centre() -> HostedParty:
    """The compute centre."""
    one_blas_thread()
    return HostedParty(JointCentre())


def owner(party_id: int, data: Callable[[int], npt.ArrayLike],
          random_state: int | None = None) -> HostedParty:
    """Owner ``party_id``, whose data ``data(party_id)`` loads here, in its own process."""
    one_blas_thread()  # before loading: the owners load theirs at the same time
    return HostedParty(JointOwner(party_id, np.asarray(data(party_id), dtype=np.float64),
                                  random_state=random_state))


def log_to_json(log: ManagerLog) -> dict[str, Any]:
    return {"d2_totals": log.d2_totals, "sampled_owners": log.sampled_owners,
            "aggregates": [[s.tolist(), c.tolist()] for s, c in log.aggregates],
            "released": [r.tolist() for r in log.released]}


def log_from_json(data: dict[str, Any]) -> ManagerLog:
    """The manager's log as its process reported it."""
    return ManagerLog(
        d2_totals=[list(t) for t in data["d2_totals"]],
        sampled_owners=[int(i) for i in data["sampled_owners"]],
        aggregates=[(np.asarray(s, dtype=np.int64), np.asarray(c, dtype=np.int64))
                    for s, c in data["aggregates"]],
        released=[np.asarray(r, dtype=np.float64) for r in data["released"]])
