"""What every transport between two parties offers: a request/response of bytes, counted.

A transport carries one protocol message to the server party (the compute centre) and brings
its reply back. Every message crosses as bytes (``to_bytes``/``from_bytes``), so the byte
counts are the ones a network carries, whichever transport is used.

>>> from cipherseg.transport.base import Transport
>>> class Echo(Transport):
...     def _exchange(self, data: bytes) -> bytes:
...         return data
>>> t = Echo()
>>> t.request_bytes(b"abcd")
b'abcd'
>>> t.stats.snapshot()
(4, 4)
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
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


class Transport(ABC):
    """Request/response of protocol bytes with byte accounting; subclasses move the bytes."""

    def __init__(self) -> None:
        self.stats = TransferStats()

    @abstractmethod
    def _exchange(self, data: bytes) -> bytes:
        """Deliver ``data`` to the server party and return its reply (raise on failure)."""

    def request_bytes(self, data: bytes) -> bytes:
        self.stats.bytes_to_server += len(data)
        reply = self._exchange(data)
        self.stats.bytes_to_client += len(reply)
        self.stats.messages += 1
        return reply

    def request(self, message: Message) -> Message:
        data = message.to_bytes()
        reply = self.request_bytes(data)
        name = type(message).__name__
        self.stats.per_type[name] = self.stats.per_type.get(name, 0) + len(data) + len(reply)
        return Message.from_bytes(reply)

    def close(self) -> None:  # noqa: B027 - optional hook: most transports hold nothing
        """Release connections (nothing to release by default)."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine.

    >>> [is_loopback_host(h) for h in ("localhost", "127.0.0.2", "::1", "centre.example")]
    [True, True, True, False]
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
