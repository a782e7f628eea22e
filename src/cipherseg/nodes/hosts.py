"""One service, several protocols: the centre service hosts protocol 4.2's and protocol 4.5's
centres, the manager service both managers, behind the same HTTP front
(:mod:`~.http_app`), tokens, mailboxes and limits.

A session belongs to the protocol it was opened with: an opening or a join names it
(``"protocol"`` in the document or in its ``"terms"``; absent, protocol 4.2, as before this
service hosted more than one), and every message posted to the session must be of that
protocol. Session ids are unique across the protocols of one service.

>>> Hosts([]).status()["protocols"]
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.nodes.board import HostedSession
from cipherseg.nodes.http_app import Host

DEFAULT_PROTOCOL = "kmeans-joint"


def protocol_named(document: dict[str, Any]) -> str:
    """The protocol an opening or a join names."""
    terms = document.get("terms")
    named = document.get("protocol") or (terms.get("protocol") if isinstance(terms, dict)
                                         else None)
    return str(named or DEFAULT_PROTOCOL)


class Hosts:
    """The protocol hosts of one service, dispatched by session (a :class:`~.http_app.Host`)."""

    def __init__(self, hosts: Sequence[Host]) -> None:
        self.hosts = {h.protocol: h for h in hosts}
        self.title = " and ".join(h.title for h in hosts) or "cipherseg service"
        self.protocol = ", ".join(self.hosts)

    def _owner(self, session: HostedSession) -> Host | None:
        for host in self.hosts.values():
            if host.session(session.session_id) is session:
                return host
        return None

    def open(self, caller: str, document: dict[str, Any]) -> dict[str, Any]:
        name = protocol_named(document)
        host = self.hosts.get(name)
        if host is None:
            raise ValidationError(f"this service does not host protocol {name[:40]!r} (it "
                                  f"hosts {', '.join(self.hosts)})")
        terms = document.get("terms")
        session_id = document.get("session") or (terms.get("session")
                                                 if isinstance(terms, dict) else None)
        if isinstance(session_id, str) and any(
                h.session(session_id) is not None for n, h in self.hosts.items() if n != name):
            raise ParameterError(f"session {session_id[:64]} is open for another protocol")
        return host.open(caller, document)

    def session(self, session_id: str) -> HostedSession | None:
        for host in self.hosts.values():
            found = host.session(session_id)
            if found is not None:
                return found
        return None

    def protocol_of(self, session: HostedSession) -> str:
        host = self._owner(session)
        return host.protocol if host is not None else self.protocol

    def party_of(self, session: HostedSession, caller: str) -> str | None:
        host = self._owner(session)
        return host.party_of(session, caller) if host is not None else None

    def aborted(self, session: HostedSession, caller: str) -> None:
        host = self._owner(session)
        if host is not None:
            host.aborted(session, caller)

    def sweep(self) -> None:
        for host in self.hosts.values():
            host.sweep()

    def status(self) -> dict[str, Any]:
        per = {name: host.status() for name, host in self.hosts.items()}
        sessions: dict[str, int] = {}
        for st in per.values():
            for state, count in st.get("sessions", {}).items():
                sessions[state] = sessions.get(state, 0) + count
        service = next((st.get("service") for st in per.values()), "service")
        out: dict[str, Any] = {"service": service, "protocol": self.protocol,
                               "protocols": list(per), "sessions": sessions}
        reports = [st["key_code_loaded"] for st in per.values() if "key_code_loaded" in st]
        if reports:  # the process's self-report (the centre's), not per protocol
            out["key_code_loaded"] = sorted({m for r in reports for m in r})
        return out
