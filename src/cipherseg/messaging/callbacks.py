"""Gateway callbacks: delivery reports (DLR) and inbound messages (MO) for opt-outs.

Kannel calls back over HTTP:

* **DLR** — ``GET <dlr-url>?m=<message id>&a=<attempt>&k=<signature>&s=<status>``. The
  gateway adapter put ``m``, ``a`` and ``k`` into the ``dlr-url`` of each message
  (Kannel's own answer carries no message id); ``k`` is an HMAC of ``(m, a)`` under a
  secret shared by the adapter and this handler, so nobody else can mark messages
  delivered or failed. ``s`` is Kannel's ``%d`` (1 delivered, 2 undelivered, 4 buffered,
  8 submitted to the SMSC, 16 rejected by it).
* **MO** — Kannel's ``sms-service`` with ``send-sender = true``: ``get-url`` (the text in
  the URL's ``text``) or ``post-url`` (the text as the body); the sender always in the
  ``X-Kannel-From`` header (kept out of URLs, hence out of access logs), and a secret token
  in the URL. An opt-out keyword (STOP, TD, 退订, …) puts the sender's keyed pseudonym on the
  opt-out list; an opt-in keyword (START, UNSTOP, 订阅) from a number that opted out takes
  it off again — the only way a customer's own opt-out is lifted. The number itself is
  normalised, pseudonymised and dropped, never stored or logged.

:class:`MessagingCallbacks` is transport-free (the platform mounts it on FastAPI routes);
:class:`CallbackServer` serves it with the standard library on loopback for standalone
workers, the benchmark and tests.

>>> from cipherseg.messaging.schema import memory_engine, standalone_tables
>>> from cipherseg.messaging.store import SqlMessageStore
>>> store = SqlMessageStore(memory_engine(), standalone_tables())
>>> store.create_schema()
>>> cb = MessagingCallbacks(store, signer=DlrSigner(b"k" * 32), mo_token="t0ken",
...                         phone_key=lambda e164: "pk:" + e164[-4:], region="CN")
>>> cb.inbound(sender="+8613812345678", text="退订", token="t0ken").status
200
>>> store.suppression_kinds(["pk:5678"])
{'pk:5678': {'opt_out'}}
>>> cb.inbound(sender="+8613812345678", text="START", token="t0ken").status
200
>>> store.suppression_kinds(["pk:5678"])
{}
>>> cb.inbound(sender="+8613812345678", text="STOP", token="wrong").status
403
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.messaging.rules import (
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    RetryPolicy,
    matched_keyword,
)
from cipherseg.messaging.store import MessageStore
from cipherseg.pii import mask_raw, normalise_phone

log = logging.getLogger("cipherseg.messaging.callbacks")

_MAX_MO_BYTES = 4096


class DlrSigner:
    """Signs and checks ``(message id, attempt)`` pairs for delivery-report URLs.

    >>> s = DlrSigner(b"x" * 32)
    >>> s.verify(7, 1, s.sign(7, 1)), s.verify(7, 2, s.sign(7, 1))
    (True, False)
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ParameterError("the delivery-report secret needs at least 16 bytes; "
                                 "generate one with secrets.token_bytes(32)")
        self._secret = secret

    def __repr__(self) -> str:
        return "DlrSigner(<secret>)"

    def sign(self, message_id: int, attempt: int) -> str:
        """The signature put into a message's dlr-url (20 hex digits)."""
        msg = f"dlr/{message_id}/{attempt}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:20]

    def verify(self, message_id: int, attempt: int, signature: str) -> bool:
        """Whether ``signature`` was made by :meth:`sign` for this pair."""
        return hmac.compare_digest(self.sign(message_id, attempt), signature)


class ReportBatcher:
    """Group commit for delivery reports: callers block until their report is written;
    one writer thread writes whatever has arrived meanwhile in a single transaction.

    Kannel sends two reports per message (8, then 1) from many connections at once; one
    transaction per report would make the database the bottleneck. The writer waits up to
    ``linger`` seconds for more reports before writing, which also leaves the database free
    for the sending worker in between.

    >>> from cipherseg.messaging.schema import memory_engine, standalone_tables
    >>> from cipherseg.messaging.store import SqlMessageStore
    >>> store = SqlMessageStore(memory_engine(), standalone_tables())
    >>> store.create_schema()
    >>> b = ReportBatcher(store, RetryPolicy())
    >>> b.submit(12345, 1, 1)
    'ignored'
    >>> b.close()
    """

    def __init__(self, store: MessageStore, retry: RetryPolicy, *, max_batch: int = 500,
                 linger: float = 0.02, timeout: float = 30.0) -> None:
        self.store, self.retry = store, retry
        self.max_batch, self.linger, self.timeout = max_batch, linger, timeout
        self._queue: queue.SimpleQueue[tuple[tuple[int, int, int], Future[str]] | None] = \
            queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cipherseg-dlr-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, message_id: int, attempt: int, status: int) -> str:
        """Queue one report and wait until it is written; returns its result."""
        fut: Future[str] = Future()
        self._queue.put(((message_id, attempt, status), fut))
        return fut.result(timeout=self.timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            try:
                results = self.store.record_delivery_reports([b[0] for b in batch],
                                                             retry=self.retry)
            except Exception as exc:  # the database is down: every caller gets a 503
                for _, fut in batch:
                    fut.set_exception(exc)
            else:
                for (_, fut), res in zip(batch, results, strict=True):
                    fut.set_result(res)

    def close(self) -> None:
        """Write what is queued, then stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout=10)


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """An HTTP answer for the gateway (``body`` is a reply SMS for MO, if not empty)."""

    status: int
    body: str = ""


class MessagingCallbacks:
    """Handles delivery reports and inbound messages for one store.

    Parameters
    ----------
    store:
        Where messages and suppressions live.
    signer:
        The :class:`DlrSigner` whose secret the gateway adapter signs dlr-urls with.
    mo_token:
        Secret expected in the MO URL (``?token=``).
    phone_key:
        Keyed pseudonym of an E.164 number (e.g. ``PiiVault.pseudonym("phone", …)``).
    region:
        Region for reading numbers without a country code.
    retry:
        Backoff for messages the SMSC rejected (DLR 16).
    opt_out_reply:
        Text sent back to a number that opted out (empty: no reply).
    on_opt_out:
        Called with ``(phone_key, keyword)`` after a new opt-out (e.g. to audit it).
    on_opt_in:
        Called with ``(phone_key, keyword)`` after an opt-out was lifted by the customer.
    batch_reports:
        Write delivery reports through a :class:`ReportBatcher` (group commit).
    """

    def __init__(self, store: MessageStore, *, signer: DlrSigner, mo_token: str,
                 phone_key: Callable[[str], str], region: str,
                 retry: RetryPolicy | None = None, opt_out_reply: str = "",
                 keywords: frozenset[str] = OPT_OUT_KEYWORDS,
                 on_opt_out: Callable[[str, str], None] | None = None,
                 on_opt_in: Callable[[str, str], None] | None = None,
                 opt_in_keywords: frozenset[str] = OPT_IN_KEYWORDS,
                 batch_reports: bool = True) -> None:
        if len(mo_token) < 4:
            raise ParameterError("the MO token must be a real secret (16+ random characters)")
        self.store = store
        self.signer = signer
        self._mo_token = mo_token
        self._phone_key = phone_key
        self.region = region
        self.retry = retry or RetryPolicy()
        self.opt_out_reply = opt_out_reply
        self.keywords = keywords
        self.on_opt_out = on_opt_out
        self.on_opt_in = on_opt_in
        self.opt_in_keywords = opt_in_keywords
        self._batcher = ReportBatcher(store, self.retry) if batch_reports else None

    def close(self) -> None:
        """Stop the report writer (after writing what is queued)."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None

    def __enter__(self) -> MessagingCallbacks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def delivery_report(self, params: Mapping[str, str]) -> CallbackResult:
        """Apply one DLR (query parameters ``m``, ``a``, ``k``, ``s``)."""
        try:
            mid, attempt, status = int(params["m"]), int(params["a"]), int(params["s"])
            sig = params["k"]
        except (KeyError, ValueError):
            return CallbackResult(400, "m, a, k and s are required integers/strings")
        if not self.signer.verify(mid, attempt, sig):
            log.warning("delivery report with a bad signature for message %d refused", mid)
            return CallbackResult(403, "bad signature")
        try:
            if self._batcher is not None:
                state = self._batcher.submit(mid, attempt, status)
            else:
                state = self.store.record_delivery_report(mid, attempt, status,
                                                          retry=self.retry)
        except Exception as exc:  # Kannel retries a failed report later
            log.warning("delivery report for message %d not stored (%s); the gateway will "
                        "retry it", mid, type(exc).__name__)
            return CallbackResult(503, "try again later")
        return CallbackResult(200, state)

    def inbound(self, *, sender: str, text: str, token: str) -> CallbackResult:
        """Handle one inbound message: an opt-out keyword opts the sender out, an opt-in
        keyword lifts the sender's opt-out; anything else is ignored."""
        if not hmac.compare_digest(token.encode(), self._mo_token.encode()):
            log.warning("inbound message with a bad token refused")
            return CallbackResult(403)
        keyword = matched_keyword(text, self.keywords)
        opt_in = None if keyword else matched_keyword(text, self.opt_in_keywords)
        if keyword is None and opt_in is None:
            return CallbackResult(200)
        try:
            e164 = normalise_phone(sender, region=self.region)
        except ValidationError:
            log.warning("keyword from an unreadable sender %s ignored", mask_raw(sender))
            return CallbackResult(200)
        key = self._phone_key(e164)
        if opt_in is not None:
            if self.store.remove_suppression(key, "opt_out"):
                log.info("opt-out lifted by inbound %r", opt_in)
                if self.on_opt_in is not None:
                    self.on_opt_in(key, opt_in)
            return CallbackResult(200)
        assert keyword is not None
        added = self.store.add_suppression(key, "opt_out", source=f"mo:{keyword}")
        if added:
            log.info("opt-out by inbound %r recorded", keyword)
            if self.on_opt_out is not None:
                self.on_opt_out(key, keyword)
        return CallbackResult(200, self.opt_out_reply if added else "")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        # Paths carry no numbers, but keep access lines out of the logs all the same.
        return

    def _answer(self, res: CallbackResult) -> None:
        body = res.body.encode("utf-8")
        self.send_response(res.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == self.server.dlr_path:
            self._answer(self.server.callbacks.delivery_report(params))
        elif parts.path == self.server.mo_path:
            self._answer(self.server.callbacks.inbound(
                sender=self.headers.get("X-Kannel-From", ""), text=params.get("text", ""),
                token=params.get("token", "")))
        else:
            self._answer(CallbackResult(404))

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if parts.path != self.server.mo_path or length > _MAX_MO_BYTES:
            self.rfile.read(min(length, _MAX_MO_BYTES))
            self._answer(CallbackResult(404 if parts.path != self.server.mo_path else 413))
            return
        raw = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        charset = "utf-8"
        for piece in ctype.split(";"):
            name, _, value = piece.strip().partition("=")
            if name.lower() == "charset" and value:
                charset = value.strip('"').lower()
        try:
            text = raw.decode(charset, errors="replace")
        except LookupError:
            text = raw.decode("utf-8", errors="replace")
        token = parse_qs(parts.query).get("token", [""])[0]
        sender = self.headers.get("X-Kannel-From", "")
        self._answer(self.server.callbacks.inbound(sender=sender, text=text, token=token))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # smsbox opens many connections at once; the default backlog of 5 drops some, and
    # Kannel then retries those reports only seconds later.
    request_queue_size = 256
    callbacks: MessagingCallbacks
    dlr_path: str
    mo_path: str


class CallbackServer:
    """Serves :class:`MessagingCallbacks` on ``host:port`` (``/dlr`` GET, ``/mo`` GET/POST).

    >>> from cipherseg.messaging.schema import memory_engine, standalone_tables
    >>> from cipherseg.messaging.store import SqlMessageStore
    >>> store = SqlMessageStore(memory_engine(), standalone_tables())
    >>> cb = MessagingCallbacks(store, signer=DlrSigner(b"k" * 32), mo_token="secret",
    ...                         phone_key=str, region="CN")
    >>> with CallbackServer(cb) as srv:
    ...     srv.dlr_url.startswith("http://127.0.0.1:")
    True
    """

    def __init__(self, callbacks: MessagingCallbacks, *, host: str = "127.0.0.1",
                 port: int = 0, dlr_path: str = "/dlr", mo_path: str = "/mo") -> None:
        self.callbacks = callbacks
        self._httpd = _Server((host, port), _Handler)
        self._httpd.callbacks = callbacks
        self._httpd.dlr_path, self._httpd.mo_path = dlr_path, mo_path
        self.host = str(self._httpd.server_address[0])
        self.port = int(self._httpd.server_address[1])
        self._dlr_path, self._mo_path = dlr_path, mo_path
        self._thread: threading.Thread | None = None

    @property
    def dlr_url(self) -> str:
        """Base URL for delivery reports (the adapter appends its parameters)."""
        return f"http://{self.host}:{self.port}{self._dlr_path}"

    def mo_url(self, token: str) -> str:
        """URL for Kannel's ``get-url``/``post-url`` (carries the MO token)."""
        return f"http://{self.host}:{self.port}{self._mo_path}?token={token}"

    def start(self) -> CallbackServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="cipherseg-callbacks", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> CallbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
