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

from cipherseg.transport.base import TransferStats, Transport

__all__ = ["InProcessTransport", "TransferStats"]


class InProcessTransport(Transport):
    """Request/response between a client and a handler that takes and returns bytes."""

    def __init__(self, handler: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self._handler = handler

    def _exchange(self, data: bytes) -> bytes:
        return self._handler(data)
