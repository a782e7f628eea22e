"""A node's feature holder of protocol 4.5, driven over HTTP against the manager and centre
services: join with the agreed terms, fetch messages by long polls, post replies. The node's
columns stay on the node: PSI blinding, scaling and CKKS encryption happen here, and only
blinded points and ciphertexts under the manager's key leave it.

As protocol 4.2's owner (:mod:`~.owner`, whose pollers this reuses): outgoing requests only,
one long-poll thread per service, the Setup checked against the terms before anything is
computed, any failure here aborting the session on both services with the reason, a failure
elsewhere arriving as :class:`~cipherseg.nodes.wire.JointAborted`. PSI lists for another
holder are posted to the centre service, which relays them (:mod:`~.vertical_centre`).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CipherSegError, ProtocolError
from cipherseg.nodes.client import ServiceClient
from cipherseg.nodes.owner import _Poller, next_mailbox_message
from cipherseg.nodes.vertical_terms import VerticalTerms
from cipherseg.nodes.wire import JointAborted
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady
from cipherseg.protocols.vertical import messages as vm
from cipherseg.protocols.vertical.holder import VerticalHolder

Progress = Callable[[str, int, int], None]


@dataclass
class HolderOutcome:
    """What this node learned: the intersection (as its own rows), its shared customers'
    labels and the released centroids (every holder's columns)."""

    holder_id: int
    labels: npt.NDArray[np.int64]  # per own row; −1: not shared
    centroids: npt.NDArray[np.float64]
    n_iter: int
    n_shared: int
    bytes_sent: int
    bytes_received: int
    seconds: float


def check_setup(setup: vm.Setup, terms: VerticalTerms) -> None:
    """Refuse a Setup that is not what this node agreed to."""
    wanted = {"session": terms.session, "holders": tuple(range(1, len(terms.nodes) + 1)),
              "columns": terms.holder_features, "k": terms.n_clusters,
              "max_iter": terms.max_iter, "init": terms.init, "dp": 0.0, "tol": terms.tol}
    got = {"session": setup.session_id, "holders": tuple(setup.holder_ids),
           "columns": tuple(setup.holder_features), "k": setup.n_clusters,
           "max_iter": setup.max_iter, "init": setup.init, "dp": setup.dp_epsilon,
           "tol": setup.tol}
    odd = [k for k in wanted if wanted[k] != got[k]]
    if odd:
        raise ProtocolError(f"the manager's Setup differs from the accepted terms "
                            f"({', '.join(odd)}); refusing to take part")


def run_holder(terms: VerticalTerms, node: str, ids: Sequence[str | bytes | int],
               X: npt.ArrayLike, *, manager: ServiceClient, centre: ServiceClient,
               contact_timeout: float = 60.0, poll_wait: float = 5.0,
               progress: Progress | None = None, idle_timeout: float = 600.0
               ) -> HolderOutcome:
    """Take part in the vertical session of ``terms`` as ``node`` with its customers ``ids``
    and its columns ``X`` (rows in the order of ``ids``); returns once the manager released
    the model, or raises."""
    started = time.perf_counter()
    holder_id = terms.party_id(node)
    holder = VerticalHolder(holder_id, ids, X)
    if holder.n_features != terms.holder_features[holder_id - 1]:
        raise ProtocolError(f"node {node} has {holder.n_features} columns; the terms name "
                            f"{terms.holder_features[holder_id - 1]}")
    inbox: queue.Queue[tuple[str, object]] = queue.Queue()
    pollers: list[_Poller] = []
    sid = terms.session

    def poller(client: ServiceClient, source: str) -> None:
        p = _Poller(client, source, sid, inbox, wait=poll_wait,
                    contact_timeout=contact_timeout)
        pollers.append(p)
        p.start()

    def post(recipient: str, message: Message) -> None:
        if recipient == vm.MANAGER:
            manager.post(sid, message)
        elif recipient == vm.CENTRE or recipient.startswith("holder-"):
            centre.post(sid, message)  # the centre relays PSI lists to the next holder
        else:
            raise ProtocolError(f"the holder addressed {recipient!r}")

    try:
        joined = manager.open({"terms": terms.to_json()})
        if joined.get("party_id") != holder_id:
            raise ProtocolError("the manager placed this node at another holder id")
        poller(manager, vm.MANAGER)
        waiting: list[tuple[str, Message]] = []
        while not holder.done:
            # before Setup the manager's join deadline applies, not this one
            source, sender, message = next_mailbox_message(
                inbox, idle_timeout=idle_timeout if len(pollers) > 1 else None)
            if isinstance(message, vm.PsiBlinded) and source == vm.CENTRE:
                # relayed: the centre checked the posting holder's token against the ring
                sender = _relayed_from(message, len(terms.nodes))
            if isinstance(message, vm.Setup):
                check_setup(message, terms)
                poller(centre, vm.CENTRE)
            if isinstance(message, vm.Abort):
                raise JointAborted(message.reason or f"{sender} ended the session")
            if progress is not None:
                progress(vm.stage_of(message), 0, 1)
            waiting.append((sender, message))
            waiting = _handle_all(holder, waiting, post)
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
    assert holder.labels_ is not None and holder.cluster_centers_ is not None
    return HolderOutcome(
        holder_id=holder_id, labels=holder.labels_, centroids=holder.cluster_centers_,
        n_iter=holder.n_iter_, n_shared=int((holder.labels_ >= 0).sum()),
        bytes_sent=manager.bytes_sent + centre.bytes_sent,
        bytes_received=manager.bytes_received + centre.bytes_received,
        seconds=time.perf_counter() - started)


def _relayed_from(message: vm.PsiBlinded, n_holders: int) -> str:
    """The holder who posted a PSI list the centre relayed (the one before this in the
    ring at that hop); the holder party refuses a list not meant for it."""
    if not 1 <= message.origin <= n_holders:
        raise ProtocolError(f"a relayed PSI list of unknown holder {message.origin}")
    return vm.holder_name((message.origin - 1 + message.hop - 1) % n_holders + 1)


def _handle_all(holder: VerticalHolder, pending: list[tuple[str, Message]],
                post: Callable[[str, Message], None]) -> list[tuple[str, Message]]:
    """Hand ``pending`` to the holder in order, retrying what was not ready after each
    success; post what it sends. Returns what is still not ready."""
    waiting: list[tuple[str, Message]] = []
    progressed = True
    while pending and progressed:
        progressed = False
        for sender, message in pending:
            try:
                out = holder.handle(sender, message)
            except NotReady:
                waiting.append((sender, message))
                continue
            progressed = True
            for recipient, reply in out:
                post(recipient, reply)
        pending, waiting = waiting, []
    return pending
