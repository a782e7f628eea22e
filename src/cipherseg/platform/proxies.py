"""Proxy headers, trusted only from the proxies an administrator names.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are read only when the connection comes from an
address in ``CIPHERSEG_TRUSTED_PROXIES`` (addresses or networks, comma-separated; default:
none). Anything else — a browser, a script on the same host — cannot choose the address the
login throttle and the audit log see. ``cipherseg serve`` turns uvicorn's own proxy-header
handling off (it trusts loopback by default), so this middleware is the only reader.

>>> parse_trusted("127.0.0.1, 10.0.0.0/8")
(IPv4Network('127.0.0.1/32'), IPv4Network('10.0.0.0/8'))
>>> client_from_forwarded("203.0.113.9, 10.1.2.3", parse_trusted("10.0.0.0/8"))
'203.0.113.9'
>>> client_from_forwarded("not-an-address", parse_trusted("10.0.0.0/8")) is None
True
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted(value: str) -> tuple[Network, ...]:
    """The networks of a ``CIPHERSEG_TRUSTED_PROXIES`` value (raises ValueError)."""
    out: list[Network] = []
    for part in value.split(","):
        part = part.strip()
        if part:
            out.append(ipaddress.ip_network(part, strict=False))
    return tuple(out)


def is_trusted(host: str | None, trusted: Sequence[Network]) -> bool:
    if not host or not trusted:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in trusted)


def client_from_forwarded(header: str, trusted: Sequence[Network]) -> str | None:
    """The client address of an ``X-Forwarded-For`` chain: the right-most entry that is not
    a trusted proxy (``None`` if an entry is not an address)."""
    hops = [h.strip() for h in header.split(",") if h.strip()]
    try:
        addresses = [str(ipaddress.ip_address(h)) for h in hops]
    except ValueError:
        return None
    for address in reversed(addresses):
        if not is_trusted(address, trusted):
            return address
    return addresses[0] if addresses else None


class TrustedProxyHeaders:
    """ASGI middleware: the client address and scheme from proxy headers, only when the peer
    is a trusted proxy; otherwise the headers are ignored."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            peer = scope.get("client")
            if peer and is_trusted(peer[0], self.trusted):
                self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Any) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        forwarded = headers.get(b"x-forwarded-for")
        if forwarded:
            client = client_from_forwarded(forwarded.decode("latin-1"), self.trusted)
            if client is not None:
                scope["client"] = (client, 0)
        proto = headers.get(b"x-forwarded-proto")
        if proto:
            value = proto.decode("latin-1").split(",")[-1].strip().lower()
            if value in ("http", "https"):
                scope["scheme"] = value if scope["type"] == "http" else \
                    {"http": "ws", "https": "wss"}[value]
