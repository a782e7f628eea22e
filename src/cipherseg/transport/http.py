"""HTTP transport: the data owner talks to a compute centre running as a service elsewhere.

The centre runs ``cipherseg centre serve`` (:mod:`cipherseg.hosting.centre_http`); the owner
passes an :class:`HttpTransport` where it would use an in-process one::

    from cipherseg import EncryptedKMeans
    from cipherseg.transport.http import HttpTransport

    with HttpTransport("https://centre.example:8787", token=token) as centre:
        km = EncryptedKMeans(n_clusters=4).fit(X, centre=centre)

Each protocol message is one ``POST /v1/messages`` (body: the message's bytes, content type
``application/octet-stream``; reply: the centre's message bytes). The access token travels as
``Authorization: Bearer …``; run the centre behind TLS (``--ssl-certfile``) on any network
you do not control: the message envelopes carry a CRC-32 against corruption, not a MAC, so
authenticity and confidentiality of the metadata come from TLS. A failed request is not
retried: protocol messages advance the session's round, so a retry would be refused anyway;
start a new fit instead.

The centre's refusals (a tampered ciphertext, an out-of-order message, a context carrying a
secret key: the classes in :data:`~cipherseg.transport.pipes.REFUSALS`) come back as the
same :mod:`cipherseg.errors` class with the centre's message; anything else — the centre
unreachable, a wrong token, a reply that is not protocol bytes, an error class a centre has
no business sending — is a :class:`~cipherseg.errors.TransportError` saying what to check
(protocol bytes that do not parse raise what :meth:`Message.from_bytes` raises:
``ProtocolError`` or ``CiphertextError``).

>>> HttpTransport("ftp://centre")
Traceback (most recent call last):
...
cipherseg.errors.ParameterError: centre URL must start with http:// or https://, got 'ftp://centre'
"""

from __future__ import annotations

import json
import ssl
from types import TracebackType
from typing import Any

import httpx

from cipherseg import errors
from cipherseg.errors import CipherSegError, ParameterError, TransportError
from cipherseg.transport.base import Transport, is_loopback_host
from cipherseg.transport.pipes import REFUSALS

MESSAGES_PATH = "/v1/messages"
STATUS_PATH = "/v1/status"
CONTENT_TYPE = "application/octet-stream"
#: How the owner's side prefixes the centre's refusals.
REFUSAL_PREFIX = "compute centre: "


class HttpTransport(Transport):
    """Protocol messages to a compute centre over HTTP(S).

    Parameters
    ----------
    url:
        The centre's base URL, e.g. ``https://centre.example:8787``.
    token:
        The centre's access token (``cipherseg centre serve --token-file``).
    timeout:
        Seconds to wait for one reply; the centre's largest stages take seconds per
        100 000 customers.
    verify:
        TLS verification: ``True``, or the path of a CA bundle for a private CA.
    client:
        An ``httpx.Client`` to use instead of a new one (tests pass FastAPI's ``TestClient``).
    insecure_http:
        Allow sending the token over plain ``http://`` to a host other than loopback.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 600.0,
                 verify: bool | str = True, client: httpx.Client | None = None,
                 insecure_http: bool = False) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ParameterError(f"centre URL must start with http:// or https://, got {url!r}")
        host = httpx.URL(url).host
        if token and url.startswith("http://") and not insecure_http \
                and not is_loopback_host(host):
            raise ParameterError(f"refusing to send the access token to {host} over plain "
                                 "HTTP; use https:// (or insecure_http=True on a network you "
                                 "trust)")
        self.url = url.rstrip("/")
        headers = {"Content-Type": CONTENT_TYPE}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tls: bool | ssl.SSLContext
        if isinstance(verify, str):
            try:
                tls = ssl.create_default_context(cafile=verify)
            except (OSError, ssl.SSLError) as exc:
                raise ParameterError(f"cannot load the CA bundle {verify}: {exc}") from exc
        else:
            tls = verify
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(
            timeout=httpx.Timeout(timeout, connect=10.0), verify=tls)
        self._headers = headers

    def __repr__(self) -> str:  # never shows the token
        return f"HttpTransport({self.url!r})"

    def _exchange(self, data: bytes) -> bytes:
        response = self._send("POST", MESSAGES_PATH, content=data)
        if response.headers.get("content-type", "").split(";")[0] != CONTENT_TYPE:
            raise TransportError(f"{self.url} answered {response.headers.get('content-type')!r}, "
                                 "not protocol bytes: is this URL a cipherseg compute centre?")
        return response.content

    def status(self) -> dict[str, Any]:
        """The centre's self-report: pid, whether any held context can decrypt (never), the
        cipherseg modules it has loaded, open sessions."""
        body: dict[str, Any] = self._send("GET", STATUS_PATH).json()
        return body

    def _send(self, method: str, path: str, content: bytes | None = None) -> httpx.Response:
        try:
            response = self._client.request(method, self.url + path, content=content,
                                            headers=self._headers)
        except httpx.TimeoutException as exc:
            raise TransportError(f"the compute centre at {self.url} did not answer in time "
                                 f"({type(exc).__name__}); raise the timeout for large inputs"
                                 ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the compute centre at {self.url}: {exc}; "
                                 "is `cipherseg centre serve` running there?") from exc
        if response.status_code == 200:
            return response
        raise _error_from(response, self.url)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _error_from(response: httpx.Response, url: str) -> CipherSegError:
    """The cipherseg error a non-200 reply stands for."""
    try:
        body = json.loads(response.content)
        name, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        return TransportError(f"the compute centre at {url} answered HTTP "
                              f"{response.status_code} without a cipherseg error body")
    if response.status_code == 401:
        return TransportError(f"the compute centre at {url} refused the access token: {detail}")
    if name in REFUSALS:  # only the centre's own refusals keep their class
        cls: type[CipherSegError] = getattr(errors, name)
        return cls(REFUSAL_PREFIX + detail)
    return TransportError(f"the compute centre at {url} failed (HTTP {response.status_code}, "
                          f"{name}): {detail}")
