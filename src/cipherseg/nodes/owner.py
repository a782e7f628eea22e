"""A node's owner party of protocol 4.2, driven over HTTP against the manager and centre
services: join with the agreed terms, fetch messages by long polls, post replies.

The node only makes outgoing requests. One thread per service long-polls the node's mailbox
there (which also tells the service the node is alive, even while this node computes); the
calling thread runs the sans-IO :class:`~cipherseg.protocols.joint.owner.JointOwner`. Before
taking part the node checks the manager's Setup against the terms it accepted (clusters,
features, iterations, initialisation, number of nodes): a manager that deviates is refused.
Any failure here — a refused message, a service unreachable for ``contact_timeout`` —
aborts the session on both services with the reason, so every other node stops too; a
failure elsewhere arrives as :class:`~cipherseg.nodes.wire.JointAborted`.
"""

from __future__ import annotations

import queue
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CipherSegError, ProtocolError, TransportError
from cipherseg.nodes.client import ServiceClient
from cipherseg.nodes.terms import JointTerms
from cipherseg.nodes.wire import JointAborted, JointFinished
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady

Progress = Callable[[str, int, int], None]


@dataclass
class OwnerOutcome:
    """What this node learned: its own customers' labels and the released model."""

    party_id: int
    labels: npt.NDArray[np.int64]
    centroids: npt.NDArray[np.float64]
    init_centres: npt.NDArray[np.float64]
    n_iter: int
    bytes_sent: int
    bytes_received: int
    seconds: float


def check_setup(setup: jm.Setup, terms: JointTerms) -> None:
    """Refuse a Setup that is not what this node agreed to."""
    d = len(terms.features)
    wanted = {"session": terms.session, "owners": tuple(range(1, len(terms.nodes) + 1)),
              "k": terms.n_clusters, "d": d, "decimals": terms.decimals,
              "max_iter": terms.max_iter, "init": terms.init, "mode": "threshold",
              "dp": 0.0}
    got = {"session": setup.session_id, "owners": tuple(setup.owner_ids),
           "k": setup.n_clusters, "d": setup.n_features, "decimals": setup.decimals,
           "max_iter": setup.max_iter, "init": setup.init, "mode": setup.mode,
           "dp": setup.dp_epsilon}
    odd = [k for k in wanted if wanted[k] != got[k]]
    if odd or setup.tol != terms.tol:
        raise ProtocolError(f"the manager's Setup differs from the accepted terms "
                            f"({', '.join(odd) or 'tol'}); refusing to take part")


class _Poller(threading.Thread):
    """Long-polls one service's mailbox into the node's queue."""

    def __init__(self, client: ServiceClient, source: str, session_id: str,
                 inbox: queue.Queue[tuple[str, object]], *, wait: float,
                 contact_timeout: float) -> None:
        super().__init__(name=f"poll-{source}", daemon=True)
        self.client, self.source, self.session_id = client, source, session_id
        self.inbox, self.wait, self.contact_timeout = inbox, wait, contact_timeout
        self.stop = threading.Event()

    def run(self) -> None:
        after, last_ok = 0, time.monotonic()
        while not self.stop.is_set():
            try:
                item = self.client.poll(self.session_id, after=after, wait=self.wait)
            except JointFinished:
                return
            except JointAborted as exc:
                self.inbox.put(("error", exc))
                return
            except TransportError as exc:
                if time.monotonic() - last_ok > self.contact_timeout:
                    self.inbox.put(("error", TransportError(
                        f"the {self.source} has been unreachable for "
                        f"{self.contact_timeout:.0f} s: {exc}")))
                    return
                self.stop.wait(1.0)
                continue
            except CipherSegError as exc:  # a message that does not parse
                self.inbox.put(("error", exc))
                return
            last_ok = time.monotonic()
            if item is not None:
                after = item[0]
                self.inbox.put(("message", (self.source, item[1], item[2])))


def run_owner(terms: JointTerms, node: str, X: npt.ArrayLike, *, manager: ServiceClient,
              centre: ServiceClient, contact_timeout: float = 60.0, poll_wait: float = 5.0,
              random_state: int | None = None, progress: Progress | None = None,
              idle_timeout: float = 600.0) -> OwnerOutcome:
    """Take part in the joint session of ``terms`` as ``node`` with features ``X``; returns
    once the manager released the model (this node's labels computed), or raises.
    ``idle_timeout``: the longest wait for the next message once the session runs."""
    started = time.perf_counter()
    party_id = terms.party_id(node)
    owner = JointOwner(party_id, X, random_state=random_state)
    inbox: queue.Queue[tuple[str, object]] = queue.Queue()
    pollers: list[_Poller] = []
    sid = terms.session

    def poller(client: ServiceClient, source: str) -> None:
        p = _Poller(client, source, sid, inbox, wait=poll_wait,
                    contact_timeout=contact_timeout)
        pollers.append(p)
        p.start()

    init_centres: npt.NDArray[np.float64] | None = None
    final: jm.Final | None = None
    try:
        joined = manager.open({"terms": terms.to_json()})
        if joined.get("party_id") != party_id:
            raise ProtocolError("the manager placed this node at another party id")
        poller(manager, jm.MANAGER)
        waiting: list[tuple[str, Message]] = []
        while not owner.done:
            # before Setup the manager's join deadline applies, not this one
            _source, sender, message = next_mailbox_message(
                inbox, idle_timeout=idle_timeout if len(pollers) > 1 else None)
            if isinstance(message, jm.Setup):
                check_setup(message, terms)
                poller(centre, jm.CENTRE)
            if isinstance(message, jm.Centroids):
                if message.iteration == 0:
                    init_centres = np.asarray(message.centroids, dtype=np.float64).reshape(
                        terms.n_clusters, len(terms.features))
                if progress is not None:
                    progress("iterations", message.iteration, terms.max_iter)
            if isinstance(message, jm.Final):
                final = message
            waiting.append((sender, message))
            waiting = _handle_all(owner, waiting, manager, centre, sid)
    except BaseException as exc:
        for p in pollers:
            p.stop.set()
        reason = str(exc) if isinstance(exc, CipherSegError) else type(exc).__name__
        if not isinstance(exc, JointAborted):
            reason = f"node {node} failed: {reason}"
            manager.abort(sid, reason)
            centre.abort(sid, reason)
        raise
    for p in pollers:
        p.stop.set()
    assert owner.labels_ is not None and final is not None and init_centres is not None
    return OwnerOutcome(
        party_id=party_id, labels=owner.labels_,
        centroids=np.asarray(final.centroids, dtype=np.float64).reshape(
            terms.n_clusters, len(terms.features)),
        init_centres=init_centres, n_iter=final.n_iter,
        bytes_sent=manager.bytes_sent + centre.bytes_sent,
        bytes_received=manager.bytes_received + centre.bytes_received,
        seconds=time.perf_counter() - started)


def _handle_all(owner: JointOwner, pending: list[tuple[str, Message]], manager: ServiceClient,
                centre: ServiceClient, session_id: str) -> list[tuple[str, Message]]:
    """Hand ``pending`` to the owner in order, retrying what was not ready after each
    success; post what it sends. Returns what is still not ready."""
    waiting: list[tuple[str, Message]] = []
    progressed = True
    while pending and progressed:
        progressed = False
        for sender, message in pending:
            try:
                out = owner.handle(sender, message)
            except NotReady:
                waiting.append((sender, message))
                continue
            progressed = True
            for recipient, reply in out:
                if recipient == jm.MANAGER:
                    manager.post(session_id, reply)
                elif recipient == jm.CENTRE:
                    centre.post(session_id, reply)
                else:
                    raise ProtocolError(f"the owner addressed {recipient!r}")
        pending, waiting = waiting, []
    return pending


def next_mailbox_message(inbox: queue.Queue[tuple[str, object]], *,
                         idle_timeout: float | None) -> tuple[str, str, Message]:
    """The next ``(source, sender, message)`` the pollers put in ``inbox``: a poller's failure
    is raised, silence past ``idle_timeout`` (None: wait) is a :class:`TransportError`, and a
    mailbox delivering another party's message is a :class:`ProtocolError`."""
    try:
        kind, payload = inbox.get(timeout=idle_timeout)
    except queue.Empty:
        raise TransportError(f"no protocol message for {idle_timeout:.0f} s while "
                             "the services answered") from None
    if kind == "error":
        assert isinstance(payload, CipherSegError)
        raise payload
    assert isinstance(payload, tuple)
    source, sender, message = typing.cast(tuple[str, str, Message], payload)
    if sender != source:
        raise ProtocolError(f"the {source}'s mailbox delivered a message from {sender}")
    return source, sender, message
