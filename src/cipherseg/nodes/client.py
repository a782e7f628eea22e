"""A node's (or the manager's) client of a joint service: join, post, long-poll, abort.

Errors: a session that ended on a failure raises :class:`~cipherseg.nodes.wire.JointAborted`
with the service's reason; the service unreachable, a wrong token or an unexpected answer is a
:class:`~cipherseg.errors.TransportError` saying what to check; a refusal of a message keeps
its :mod:`cipherseg.errors` class name in the text.

>>> ServiceClient("ftp://x", token="t" * 20)
Traceback (most recent call last):
...
cipherseg.errors.ParameterError: service URL must start with http:// or https://, got 'ftp://x'
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from typing import Any

import httpx

from cipherseg.errors import ParameterError, TransportError
from cipherseg.nodes import wire
from cipherseg.nodes.wire import JointAborted, JointFinished
from cipherseg.protocols.messages import Message
from cipherseg.transport.base import is_loopback_host


class ServiceClient:
    """Requests to one joint service (``what`` names it in errors: "manager", "centre")."""

    def __init__(self, url: str, *, token: str, what: str = "service", timeout: float = 120.0,
                 verify: bool | str = True, insecure_http: bool = False) -> None:
        if not url.startswith(("http://", "https://")):
            raise ParameterError(f"service URL must start with http:// or https://, got {url!r}")
        host = httpx.URL(url).host
        if url.startswith("http://") and not insecure_http and not is_loopback_host(host):
            raise ParameterError(f"refusing to send a node token to {host} over plain HTTP; "
                                 "use https:// (or insecure_http on a network you trust)")
        tls: bool | ssl.SSLContext = verify if isinstance(verify, bool) else \
            ssl.create_default_context(cafile=verify)
        self.url = url.rstrip("/")
        self.what = what
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=10.0), verify=tls)
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:  # never the token
        return f"ServiceClient({self.what}, {self.url!r})"

    def _count(self, sent: int, received: int) -> None:
        with self._lock:
            self.bytes_sent += sent
            self.bytes_received += received

    def _request(self, method: str, path: str, *, content: bytes | None = None,
                 params: dict[str, Any] | None = None, timeout: float | None = None
                 ) -> httpx.Response:
        try:
            kwargs: dict[str, Any] = {}
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=10.0)
            response = self._client.request(method, self.url + path, content=content,
                                            params=params, headers=self._headers, **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the {self.what} at {self.url}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self._count(len(content or b""), len(response.content))
        if response.status_code in (200, 202, 204):
            return response
        try:
            body = json.loads(response.content)
            name, detail = str(body["error"]), str(body["detail"])
        except (ValueError, KeyError, TypeError):
            raise TransportError(f"the {self.what} at {self.url} answered HTTP "
                                 f"{response.status_code} without a cipherseg error body"
                                 ) from None
        if response.status_code == 410:
            raise JointAborted(detail)
        if response.status_code == 401:
            raise TransportError(f"the {self.what} at {self.url} refused this node's token")
        raise TransportError(f"the {self.what} refused ({response.status_code} {name}): "
                             f"{detail}")

    def open(self, document: dict[str, Any]) -> dict[str, Any]:
        """Open or join a session (the service says what the document means)."""
        answer: dict[str, Any] = self._request(
            "POST", wire.SESSIONS, content=json.dumps(document).encode()).json()
        return answer

    def post(self, session_id: str, message: Message) -> None:
        self._request("POST", f"{wire.SESSIONS}/{session_id}/messages",
                      content=message.to_bytes())

    def poll(self, session_id: str, *, after: int, wait: float
             ) -> tuple[int, str, Message] | None:
        """The next message after ``after`` as (seq, sender, message), or None after
        ``wait`` s; :class:`JointFinished` once the session is over with nothing left."""
        response = self._request("GET", f"{wire.SESSIONS}/{session_id}/mailbox",
                                 params={"after": after, "wait": wait}, timeout=wait + 30)
        if response.status_code == 204:
            if response.headers.get(wire.STATE_HEADER) == "finished":
                raise JointFinished(f"the {self.what}'s session is over")
            return None
        try:
            seq = int(response.headers[wire.SEQ_HEADER])
            sender = response.headers[wire.SENDER_HEADER]
        except (KeyError, ValueError):
            raise TransportError(f"the {self.what} answered a poll without a sequence "
                                 "number") from None
        return seq, sender, Message.from_bytes(response.content)

    def abort(self, session_id: str, reason: str) -> None:
        """Tell the service the session failed here (best effort: errors are swallowed)."""
        with contextlib.suppress(TransportError):
            self._request("POST", f"{wire.SESSIONS}/{session_id}/abort",
                          content=json.dumps({"reason": wire.clean_reason(reason)}).encode(),
                          timeout=10)

    def session_status(self, session_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._request("GET", f"{wire.SESSIONS}/{session_id}").json()
        return answer

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._request("GET", wire.STATUS).json()
        return answer

    def close(self) -> None:
        self._client.close()
