"""Protocol 4.5 (vertical k-means): running every party in this process.

Parties follow the common contract (:mod:`cipherseg.protocols.party`); the in-process router
(:func:`cipherseg.protocols.delivery.deliver`) carries their messages as bytes
(``to_bytes``/``from_bytes`` every time, so the counts are what a network carries) and counts
bytes and handler seconds per party and stage. Another transport (process pipes, HTTP between
nodes) adapts the same parties; a message that overtakes a holder's or the centre's Setup (a PSI
list or tags, over a network) is deferred by that party (``NotReady``) until the Setup arrives.

A party that refuses a message ends the run: the others receive ``Abort`` (and drop what they
hold) and the refusal is raised; a run in which a party stops answering ends with
:class:`~cipherseg.errors.ProtocolError` naming what was awaited. The manager releases the
model and the labels only in its last message, so neither leaves anything released.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import CipherSegError, ProtocolError, ValidationError
from cipherseg.progress import Progress
from cipherseg.protocols.delivery import Traffic, deliver
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Party
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.centre import VerticalCentre
from cipherseg.protocols.vertical.holder import VerticalHolder
from cipherseg.protocols.vertical.manager import ManagerLog, VerticalManager


def _abort_all(parties: dict[str, Party], culprit: str, refused: Message,
               error: CipherSegError) -> None:
    """A party refused a message: the others drop what they hold."""
    abort = vm.new_message(vm.Abort, refused.session_id, 0, reason=f"{culprit}: {error}")
    for name, party in parties.items():
        if name != culprit:
            # A party that had not joined yet has nothing to drop.
            with contextlib.suppress(CipherSegError):
                party.handle(culprit, abort)


@dataclass
class VerticalResult:
    """Outcome of one run, from every party's side (an evaluator's view)."""

    centroids: npt.NDArray[np.float64]  # input units, holders' columns in order
    labels: list[npt.NDArray[np.int64]]  # per holder, per row; −1 = not shared
    shared_rows: list[npt.NDArray[np.int64]]  # per holder, its rows in the shared order
    n_iter: int
    n_shared: int
    traffic: Traffic
    wall_seconds: float
    picked_indices: list[int]  # the centre's view: shared-order rows k-means++ picked
    init_centres: npt.NDArray[np.float64] | None  # given / random init (input units)
    manager_log: ManagerLog
    party_seconds: dict[str, dict[str, float]]
    dp_epsilon_spent: float | None = None
    exponent: int = 0

    def report(self) -> dict[str, Any]:
        out = self.traffic.as_dict()
        out.update(wall_seconds=self.wall_seconds, n_iter=self.n_iter, n_shared=self.n_shared,
                   empty_clusters=list(self.manager_log.empty_clusters),
                   dp_epsilon_spent=self.dp_epsilon_spent)
        return out


def run_vertical(columns: Sequence[npt.ArrayLike], n_clusters: int, *,
                 ids: Sequence[Sequence[str | bytes | int]] | None = None,
                 init: str | npt.ArrayLike = "k-means++", max_iter: int = 300,
                 tol: float = 0.0, dp_epsilon: float | None = None, dp_delta: float = 1e-6,
                 dp_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 random_state: int | None = None, n_jobs: int | None = None,
                 progress: Progress | None = None,
                 wrap: Callable[[str, Party], Party] | None = None) -> VerticalResult:
    """Run protocol 4.5 with every party in this process.

    ``columns[i]`` is holder i+1's block of columns; ``ids[i]`` its row identifiers (without
    ``ids`` the blocks are taken as already row-aligned and rows are numbered). ``n_jobs``
    processes share the PSI group operations. ``wrap(name, party)`` may replace a party (tests:
    faulty or lying parties).
    """
    blocks = [np.asarray(c, dtype=np.float64) for c in columns]
    if len(blocks) < 2:
        raise ValidationError("vertical k-means needs the columns of two or more holders")
    if ids is None:
        rows = {b.shape[0] for b in blocks}
        if len(rows) != 1:
            raise ValidationError(f"without ids every holder must have the same rows; got "
                                  f"{sorted(rows)} rows")
        ids = [list(range(blocks[0].shape[0]))] * len(blocks)
    if len(ids) != len(blocks):
        raise ValidationError("pass one id list per holder")
    init_name, init_centres = (init, None) if isinstance(init, str) else ("given", init)
    seeds = [None] * (len(blocks) + 2) if random_state is None else [
        int(random_state) * 1009 + i for i in range(len(blocks) + 2)]
    # One pool per party: the manager's secret context is registered in its own only.
    executor = LocalExecutor(n_jobs) if n_jobs not in (None, 1) else None
    manager_executor = LocalExecutor(n_jobs) if n_jobs not in (None, 1) else None
    centre_executor = LocalExecutor(n_jobs) if n_jobs not in (None, 1) else None
    try:
        holders = [VerticalHolder(i + 1, ids[i], b, executor=executor)
                   for i, b in enumerate(blocks)]
        manager = VerticalManager([b.shape[1] for b in blocks], n_clusters, init=init_name,
                                  init_centres=init_centres, max_iter=max_iter, tol=tol,
                                  dp_epsilon=dp_epsilon, dp_delta=dp_delta,
                                  dp_bounds=dp_bounds, random_state=seeds[0],
                                  executor=manager_executor)
        centre = VerticalCentre(random_state=seeds[1], executor=centre_executor)
        parties: dict[str, Party] = {manager.name: manager, centre.name: centre}
        parties.update({h.name: h for h in holders})
        if wrap is not None:
            parties = {name: wrap(name, p) for name, p in parties.items()}
        traffic = Traffic(stage_of=vm.stage_of)
        last: list[tuple[str, int, int]] = []

        def report(message: Message) -> None:
            if progress is None:
                return
            stage = vm.stage_of(message)
            if stage == "init":
                state = ("init", manager.n_init_centres, manager.k)
            elif stage == "iterations":
                state = ("iterations", manager.n_iter_, manager.max_iter)
            elif stage == "final":
                state = ("final", int(manager.done), 1)
            else:
                state = (stage, 1 if isinstance(message, (vm.Aligned, vm.Totals)) else 0, 1)
            if not last or last[-1] != state:
                last[:] = [state]
                progress(*state)

        start = time.perf_counter()
        first = manager.start()
        traffic.seconds[manager.name]["setup"] += time.perf_counter() - start
        deliver(parties, [(manager.name, dst, m) for dst, m in first], traffic,
                on_message=report, on_refusal=partial(_abort_all, parties))
        wall = time.perf_counter() - start
    finally:
        for ex in (executor, manager_executor, centre_executor):
            if ex is not None:
                ex.close()
    if not manager.done or not all(h.done for h in holders) or not centre.closed:
        waiting = sorted(manager._expect | centre._expect)
        awaited = ", ".join(waiting) or "a party that stopped answering"
        raise ProtocolError(f"the session stalled before its end (awaited: {awaited}); "
                            "nothing was released")
    init_out = None
    if manager.init_centres_ is not None and manager.exponent is not None:
        init_out = manager.init_centres_ * 2.0**manager.exponent + (
            (np.asarray(dp_bounds[0]) + np.asarray(dp_bounds[1])) / 2.0
            if dp_epsilon is not None and dp_bounds is not None else 0.0)
    assert holders[0].cluster_centers_ is not None
    return VerticalResult(
        centroids=holders[0].cluster_centers_,
        labels=[h.labels_ for h in holders if h.labels_ is not None],
        shared_rows=[h.shared_rows_ for h in holders if h.shared_rows_ is not None],
        n_iter=manager.n_iter_, n_shared=manager.n_samples, traffic=traffic,
        wall_seconds=wall, picked_indices=list(centre.picked_indices), init_centres=init_out,
        manager_log=manager.log,
        party_seconds={n: dict(v) for n, v in traffic.seconds.items()},
        dp_epsilon_spent=manager.epsilon_spent(), exponent=int(manager.exponent or 0))
