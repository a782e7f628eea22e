"""Parties the pipe tests start in child processes (imported there through PYTHONPATH)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import PROTOCOLS, Message, define_protocol, register_message
from cipherseg.protocols.party import NotReady, Outgoing

if "test-pipes" not in PROTOCOLS:
    define_protocol("test-pipes", version=1)


@register_message
@dataclass(frozen=True, slots=True)
class Note(Message):
    PROTOCOL = "test-pipes"
    text: str = ""
    blob: bytes = b""


class Relay:
    """Forwards each note to ``to`` and echoes it to its sender; defers notes from "late"
    until one from "early" arrived; refuses a note saying "refuse"."""

    def __init__(self, name: str = "relay", to: str = "sink") -> None:
        self.name, self.to = name, to
        self.seen_early = False

    def handle(self, sender: str, message: Message) -> Outgoing:
        if not isinstance(message, Note):
            raise ProtocolError(f"unexpected {type(message).__name__}")
        if message.text == "refuse":
            raise ProtocolError("refused as asked")
        if message.text == "crash":
            raise RuntimeError("internal detail")
        if sender == "late" and not self.seen_early:
            raise NotReady("waiting for early")
        self.seen_early = self.seen_early or sender == "early"
        return [(self.to, message), (sender, message)]

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "seen_early": self.seen_early}
