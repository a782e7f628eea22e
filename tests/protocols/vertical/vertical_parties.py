"""Test helpers for protocol 4.5: a party wrapper that records what it receives and lets a test
tamper with what it sends (faulty or lying parties), and message rewriters."""

from __future__ import annotations

from typing import Any

from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Party
from object_graph import reachable


class Spy:
    """Wraps a party: records what it receives, and lets a test tamper with what it sends."""

    def __init__(self, name: str, party: Party, tamper: Any = None) -> None:
        self.name = name
        self.party = party
        self.received: list[Message] = []
        self.tamper = tamper
        self.snapshots: list[list[object]] = []
        self.scan = False

    def handle(self, sender: str, message: Message) -> list[tuple[str, Message]]:
        self.received.append(message)
        out = self.party.handle(sender, message)
        if self.scan:
            self.snapshots.append(reachable(self.party))
        return self.tamper(out) if self.tamper else out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.party, name)


def drop_after(kind: str) -> Any:
    """A tamper that sends nothing once the party's reply contains a ``kind`` message."""
    def tamper(out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        return [] if any(type(m).__name__ == kind for _, m in out) else out
    return tamper


def replace(kind: str, change: Any) -> Any:
    """A tamper that rewrites every outgoing ``kind`` message with ``change(message)``."""
    def tamper(out: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
        return [(dst, change(m) if type(m).__name__ == kind else m) for dst, m in out]
    return tamper
