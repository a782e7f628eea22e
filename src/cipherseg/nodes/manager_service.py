"""Protocol 4.2's manager as a network service (``cipherseg manager serve``).

A node **joins** a session by posting ``{"terms": {...}}`` (:class:`~.terms.JointTerms`)
with its own token; the node must be named in the terms, and every node must join with the
same terms (their SHA-256 is compared). When the last named node has joined, the service
builds the :class:`~cipherseg.protocols.joint.manager.JointManager` from the terms, opens the
session on the compute centre service (naming the nodes in party order), and starts: Setup
to the centre and every node, its key share to the centre.

Relays: what the manager sends to a node waits in the node's mailbox here; what it sends to
the centre it posts to the centre service at once; what the centre sends to the manager it
fetches by long-polling its own mailbox on the centre (one thread per session). So nodes
only ever make outgoing requests, and the centre needs to know nobody's address.

The session fails — for every node, with the reason — when nodes named in the terms have not
all joined within ``join_timeout``, a joined node stops making contact for
``contact_timeout`` (nodes poll every few seconds while they take part), the centre reports
a failure or cannot be reached for ``contact_timeout``, or any party refuses a message.
The manager then tells the centre, and nothing is released: the model goes to the nodes only
in the protocol's last message, once every iteration is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cipherseg.errors import CipherSegError, ParameterError, TransportError, ValidationError
from cipherseg.nodes.board import HostedSession
from cipherseg.nodes.client import ServiceClient
from cipherseg.nodes.terms import JointTerms
from cipherseg.nodes.wire import JointAborted, JointFinished
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.manager import JointManager
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Party

log = logging.getLogger("cipherseg.nodes")


@dataclass
class _Joint:
    terms: Any  # JointTerms, VerticalTerms
    digest: str
    session: HostedSession
    deadline: float
    joined: set[str] = field(default_factory=set)
    centre_told: bool = False
    poller: threading.Thread | None = None


class JointManagerHost:
    """The manager's sessions (see :class:`cipherseg.nodes.http_app.Host`)."""

    title = "cipherseg joint manager"
    protocol = jm.PROTOCOL

    def __init__(self, centre: ServiceClient, *, contact_timeout: float = 60.0,
                 join_timeout: float = 900.0, max_sessions: int = 32,
                 max_sessions_per_node: int = 4, retain_seconds: float = 600.0,
                 poll_wait: float = 10.0) -> None:
        self.centre = centre
        self.contact_timeout = contact_timeout
        self.join_timeout = join_timeout
        self.max_sessions = max_sessions
        self.max_sessions_per_node = max_sessions_per_node
        self.retain_seconds = retain_seconds
        self.poll_wait = poll_wait
        self._lock = threading.Lock()
        self._joints: dict[str, _Joint] = {}

    # ------------------------------------------------------------------ joining
    def open(self, caller: str, document: dict[str, Any]) -> dict[str, Any]:
        terms = self.terms_from(document.get("terms"))
        if caller not in terms.nodes:
            raise PermissionError(f"node {caller} is not named in the terms it sent")
        digest = terms.digest()
        start = False
        with self._lock:
            joint = self._joints.get(terms.session)
            if joint is None or caller not in joint.joined:
                mine = sum(1 for j in self._joints.values() if caller in j.joined
                           and j.session.state in ("waiting", "running"))
                if mine >= self.max_sessions_per_node:
                    raise ParameterError(f"node {caller} already takes part in {mine} open "
                                         "sessions here; finish or abort one first")
            if joint is None:
                if len(self._joints) >= self.max_sessions:
                    raise ParameterError(f"the manager has {self.max_sessions} sessions; try "
                                         "again when one ends")
                joint = self._new(terms, digest)
                self._joints[terms.session] = joint
            elif joint.digest != digest:
                raise ValidationError(
                    "these terms differ from those the other nodes joined session "
                    f"{terms.session} with; compare the invitation on every node")
            if joint.session.failure is not None:
                raise JointAborted(joint.session.failure)
            if caller not in joint.joined:
                joint.joined.add(caller)
                joint.session.touch(self.party_name(terms, caller))
                start = joint.joined == set(terms.nodes) and joint.session.pending
                log.info("node %s joined session %s… (%d of %d)", caller, terms.session[:8],
                         len(joint.joined), len(terms.nodes))
        if start:
            self._start(joint)
        return {"session": terms.session, "party_id": terms.party_id(caller),
                "state": joint.session.state,
                "waiting_for": sorted(set(terms.nodes) - joint.joined)}

    # ------------------------------------------------------------------ the protocol's side
    # (hooks: :class:`cipherseg.nodes.vertical_manager.VerticalManagerHost` overrides them)
    def terms_from(self, document: Any) -> Any:
        """The terms a node joins with."""
        return JointTerms.from_json(document)

    def party_name(self, terms: Any, node: str) -> str:
        """``node``'s party name in the session of ``terms``."""
        return jm.owner_name(terms.party_id(node))

    def centre_document(self, terms: Any) -> dict[str, Any]:
        """What opens the session on the centre service."""
        return {"session": terms.session, "nodes": list(terms.nodes)}

    def build(self, terms: Any) -> Party:
        """The hosted manager party of a new session."""
        d = len(terms.features)
        manager = JointManager(
            list(range(1, len(terms.nodes) + 1)), d, terms.n_clusters, init=terms.init,
            init_centres=(np.array(terms.init_centres).reshape(terms.n_clusters, d)
                          if terms.init == "given" else None),
            max_iter=terms.max_iter, tol=terms.tol, decimals=terms.decimals,
            session_id=terms.session)
        return manager

    def _new(self, terms: Any, digest: str) -> _Joint:
        manager = self.build(terms)
        owners = {self.party_name(terms, n): f"node {n}" for n in terms.nodes}
        session = HostedSession(terms.session, manager, remotes=list(owners),
                                forward=self._forwarder(terms.session),
                                contact_timeout=self.contact_timeout, labels=owners)
        session.pending = True
        return _Joint(terms, digest, session, time.monotonic() + self.join_timeout)

    def _forwarder(self, session_id: str) -> Any:
        def forward(recipient: str, message: Message) -> None:
            if recipient != jm.CENTRE:
                raise ValidationError(f"the manager addressed {recipient!r}")
            self.centre.post(session_id, message)
        return forward

    def _start(self, joint: _Joint) -> None:
        terms = joint.terms
        try:
            self.centre.open(self.centre_document(terms))
        except CipherSegError as exc:
            joint.session.abort(f"the compute centre could not open the session: {exc}")
            raise JointAborted(joint.session.failure or "") from exc
        manager: Any = joint.session.party  # a manager party: start() opens the protocol
        joint.poller = threading.Thread(target=self._poll_centre, args=(joint,),
                                        name=f"centre-poll-{terms.session[:8]}", daemon=True)
        joint.poller.start()
        joint.session.start(manager.start())
        log.info("session %s… started with %d nodes", terms.session[:8], len(terms.nodes))

    # ------------------------------------------------------------------ the centre's messages
    def _poll_centre(self, joint: _Joint) -> None:
        session, after = joint.session, 0
        last_ok = time.monotonic()
        while session.failure is None:
            try:
                item = self.centre.poll(session.session_id, after=after, wait=self.poll_wait)
            except JointAborted as exc:
                session.abort(f"the compute centre ended the session: {exc}")
                joint.centre_told = True  # it knows
                return
            except JointFinished:
                return
            except TransportError as exc:
                if time.monotonic() - last_ok > self.contact_timeout:
                    session.abort(f"the compute centre is unreachable: {exc}")
                    return
                time.sleep(1.0)
                continue
            last_ok = time.monotonic()
            if item is None:
                continue
            seq, sender, message = item
            after = seq
            if sender != jm.CENTRE:
                session.abort(f"the centre's mailbox delivered a message from {sender!r}")
                return
            try:
                session.deliver(jm.CENTRE, message)
            except CipherSegError:
                return  # the session has failed with the reason
            if session.finished:
                return

    # ------------------------------------------------------------------ Host
    def session(self, session_id: str) -> HostedSession | None:
        with self._lock:
            joint = self._joints.get(session_id)
        return joint.session if joint is not None else None

    def party_of(self, session: HostedSession, caller: str) -> str | None:
        with self._lock:
            joint = self._joints.get(session.session_id)
        if joint is None or caller not in joint.joined:
            return None
        return self.party_name(joint.terms, caller)

    def aborted(self, session: HostedSession, caller: str) -> None:
        self._tell_centre(session.session_id)

    def _tell_centre(self, session_id: str) -> None:
        with self._lock:
            joint = self._joints.get(session_id)
            if joint is None or joint.centre_told or joint.session.pending:
                return
            joint.centre_told = True
        self.centre.abort(session_id, joint.session.failure or "the manager ended the session")

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            joints = list(self._joints.values())
        for joint in joints:
            s = joint.session
            if s.pending and now > joint.deadline:
                missing = ", ".join(sorted(set(joint.terms.nodes) - joint.joined))
                s.abort(f"node(s) {missing} did not join within {self.join_timeout:.0f} s")
            s.check_contacts(now)
            if s.failure is not None:
                self._tell_centre(s.session_id)
            if s.ended_at is not None and now - s.ended_at > self.retain_seconds:
                with self._lock:
                    self._joints.pop(s.session_id, None)

    def status(self) -> dict[str, Any]:
        with self._lock:
            states = [j.session.state for j in self._joints.values()]
        return {"service": "manager", "protocol": self.protocol,
                "sessions": {st: states.count(st) for st in sorted(set(states))}}
