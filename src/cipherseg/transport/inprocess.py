"""In-process transport: the default way parties talk when they share one process.

Every message still crosses as bytes (``to_bytes``/``from_bytes``), so serialisation is always
exercised and the byte counts are the ones a network would carry.

>>> from cipherseg.transport.inprocess import InProcessTransport
>>> t = InProcessTransport(handler=lambda data: data[::-1])
>>> t.request_bytes(b"abc")
b'cba'
>>> (t.stats.bytes_to_server, t.stats.bytes_to_client)
(3, 3)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cipherseg.protocols.messages import Message


@dataclass(slots=True)
class TransferStats:
    """Bytes and messages in each direction (client = data owner, server = compute centre)."""

    bytes_to_server: int = 0
    bytes_to_client: int = 0
    messages: int = 0
    per_type: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> tuple[int, int]:
        return self.bytes_to_server, self.bytes_to_client


class InProcessTransport:
    """Request/response between a client and a handler that takes and returns bytes."""

    def __init__(self, handler: Callable[[bytes], bytes]) -> None:
        self._handler = handler
        self.stats = TransferStats()

    def request_bytes(self, data: bytes) -> bytes:
        self.stats.bytes_to_server += len(data)
        reply = self._handler(data)
        self.stats.bytes_to_client += len(reply)
        self.stats.messages += 1
        return reply

    def request(self, message: Message) -> Message:
        data = message.to_bytes()
        reply = self.request_bytes(data)
        name = type(message).__name__
        self.stats.per_type[name] = self.stats.per_type.get(name, 0) + len(data) + len(reply)
        return Message.from_bytes(reply)
