"""Protocol 4.2's compute centre as a network service (``cipherseg centre serve --protocol
joint``): one :class:`~cipherseg.protocols.joint.centre.JointCentre` per session.

Only the manager service (the entry named ``manager`` in the nodes file) opens a session,
naming the nodes in party order (``{"session": id, "nodes": [...]}``); from then on the
session answers only the manager and those nodes. The centre relays key shares and adds
ciphertexts; what it sends to a node waits in that node's mailbox, what it sends to the
manager in the manager's (the manager service long-polls it like a node). It holds public
material only and cannot import key-holding code (import-linter custody contract).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.nodes.board import HostedSession
from cipherseg.nodes.terms import MAX_NODES
from cipherseg.nodes.wire import SESSION_ID
from cipherseg.protocols.joint import messages as jm
from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.party import Party
from cipherseg.transport.tokens import OWNER_NAME

MANAGER_NODE = "manager"


class JointCentreHost:
    """The centre's sessions (see :class:`cipherseg.nodes.http_app.Host`)."""

    title = "cipherseg joint compute centre"
    protocol = jm.PROTOCOL

    def __init__(self, *, contact_timeout: float = 60.0, max_sessions: int = 32,
                 retain_seconds: float = 600.0, manager_node: str = MANAGER_NODE) -> None:
        self.contact_timeout = contact_timeout
        self.max_sessions = max_sessions
        self.retain_seconds = retain_seconds
        self.manager_node = manager_node
        self._lock = threading.Lock()
        self._sessions: dict[str, HostedSession] = {}
        self._parties: dict[str, dict[str, str]] = {}  # session -> node -> party name

    def open(self, caller: str, document: dict[str, Any]) -> dict[str, Any]:
        if caller != self.manager_node:
            raise PermissionError("only the manager service opens sessions on the centre")
        session_id, nodes = document.get("session"), document.get("nodes")
        if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
            raise ValidationError("session must be 16-64 letters, digits, '-' or '_'")
        if not isinstance(nodes, list) or not 1 <= len(nodes) <= MAX_NODES or \
                len(set(nodes)) != len(nodes) or self.manager_node in nodes or \
                not all(isinstance(n, str) and OWNER_NAME.fullmatch(n) for n in nodes):
            raise ValidationError(f"nodes must be 1-{MAX_NODES} distinct node names")
        parties = {self.manager_node: self.manager_party}
        parties.update(self.party_names(nodes))
        with self._lock:
            if session_id in self._sessions:
                raise ParameterError(f"session {session_id} is already open")
            if len(self._sessions) >= self.max_sessions:
                raise ParameterError(f"the centre has {self.max_sessions} sessions open; try "
                                     "again when one ends")
            self._sessions[session_id] = HostedSession(
                session_id, self.build(nodes), remotes=list(parties.values()),
                contact_timeout=self.contact_timeout,
                labels={p: f"node {n}" if p != self.manager_party else "the manager"
                        for n, p in parties.items()})
            self._parties[session_id] = parties
        return {"session": session_id, "state": "running"}

    # the protocol's side (hooks: :mod:`cipherseg.nodes.vertical_centre` overrides them)
    manager_party = jm.MANAGER

    def party_names(self, nodes: list[str]) -> dict[str, str]:
        """Each node's party name in a session naming ``nodes`` in party order."""
        return {n: jm.owner_name(i) for i, n in enumerate(nodes, start=1)}

    def build(self, nodes: list[str]) -> Party:
        """The hosted centre party of a new session."""
        return JointCentre()

    def session(self, session_id: str) -> HostedSession | None:
        with self._lock:
            return self._sessions.get(session_id)

    def party_of(self, session: HostedSession, caller: str) -> str | None:
        with self._lock:
            return self._parties.get(session.session_id, {}).get(caller)

    def aborted(self, session: HostedSession, caller: str) -> None:
        """Nothing to tell: the manager polls this service and reads the reason."""

    def sweep(self) -> None:
        now = time.monotonic()
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.check_contacts(now)
            if s.ended_at is not None and now - s.ended_at > self.retain_seconds:
                with self._lock:
                    self._sessions.pop(s.session_id, None)
                    self._parties.pop(s.session_id, None)

    def status(self) -> dict[str, Any]:
        with self._lock:
            states = [s.state for s in self._sessions.values()]
        return {"service": "centre", "protocol": self.protocol,
                "sessions": {st: states.count(st) for st in sorted(set(states))},
                "key_code_loaded": key_code_loaded()}


def key_code_loaded() -> list[str]:
    """Key holders' modules loaded in this process (a self-report for the operator: the
    import-linter contract is the guarantee; a test checks this is empty after a session)."""
    return sorted(m for m in list(sys.modules) if m.startswith("cipherseg.") and (
        m.endswith(("_keys", ".owner", ".manager", ".owner_ops"))
        or m.startswith("cipherseg.pii")))
