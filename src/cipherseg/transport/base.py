"""What every transport between two parties offers: a request/response of bytes, counted.

A transport is a :class:`~cipherseg.protocols.party.Link` (the party contract's owner end):
it carries one protocol message to the server party and brings its reply back. Every message
crosses as bytes (``to_bytes``/``from_bytes``), so the byte counts are the ones a network
carries, whichever transport is used.

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

from cipherseg.protocols.party import Link, TransferStats

__all__ = ["TransferStats", "Transport", "is_loopback_host"]

Transport = Link
"""Every transport is a :class:`~cipherseg.protocols.party.Link`."""


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
