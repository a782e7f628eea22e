"""The compute centre as an HTTP service (``cipherseg centre serve``).

Server side of :mod:`cipherseg.transport.http`: one :class:`~cipherseg.parties.compute_centre.
ComputeCentre` behind two routes.

=================== ===========================================================================
``POST /v1/messages`` body: one protocol 4.1 message (bytes); reply: the centre's message
``GET /v1/status``    pid, whether any held context can decrypt (never), loaded cipherseg
                      modules, open sessions — what an owner checks before uploading
=================== ===========================================================================

Both need ``Authorization: Bearer <token>`` when the service has a token. A refused message
(tampered or truncated ciphertext, out-of-order or foreign-session message, a context carrying
a secret key) answers HTTP 400 with ``{"error": <cipherseg error class>, "detail": …}``; a
message larger than ``max_message_bytes`` answers 413 before it is read. Messages are handled
one at a time (the centre's block work is parallel inside each message on its executor).

What the service sees is what the centre sees in protocol 4.1 (``docs/security.md``): public
contexts and ciphertexts; it never holds a secret key — this module cannot import key-holding
code (import-linter contract) and ``/v1/status`` reports the modules loaded. The access token
is compared in constant time and never logged. A network observer without TLS sees message
sizes and timing (the protocol's public schedule) and could alter ciphertexts undetected by
the CRC-32 envelopes: use TLS outside a trusted network.

>>> from fastapi.testclient import TestClient
>>> from cipherseg.parties.compute_centre import ComputeCentre
>>> client = TestClient(create_centre_app(ComputeCentre(), token="s3cret"))
>>> client.get("/v1/status").status_code
401
>>> client.get("/v1/status", headers={"Authorization": "Bearer s3cret"}).json()["holds_secret_key"]
False
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cipherseg.errors import CipherSegError
from cipherseg.parties.compute_centre import ComputeCentre
from cipherseg.transport.http import CONTENT_TYPE, MESSAGES_PATH, STATUS_PATH

DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024**3  # an upload of ~10 M customers × 3 features
log = logging.getLogger("cipherseg.centre")


def _error(status: int, name: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail}, status_code=status)


def create_centre_app(centre: ComputeCentre, *, token: str | None,
                      max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> FastAPI:
    """The centre's ASGI app. ``token=None`` serves without authentication (loopback only:
    the CLI refuses it on other interfaces)."""
    app = FastAPI(title="cipherseg compute centre", docs_url=None, redoc_url=None,
                  openapi_url=None)
    lock = threading.Lock()
    expected = f"Bearer {token}".encode() if token else None

    def authorised(request: Request) -> bool:
        if expected is None:
            return True
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, expected)

    def handle(data: bytes) -> bytes:
        with lock:
            return centre.handle_bytes(data)

    @app.post(MESSAGES_PATH)
    async def message(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "TransportError", "missing or wrong access token")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_message_bytes:
            return _error(413, "TransportError",
                          f"message of {int(declared):,} bytes exceeds this centre's limit of "
                          f"{max_message_bytes:,} (--max-message-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_message_bytes:
                return _error(413, "TransportError", f"message exceeds this centre's limit of "
                              f"{max_message_bytes:,} bytes (--max-message-mb)")
            chunks.append(chunk)
        try:
            reply = await run_in_threadpool(handle, b"".join(chunks))
        except CipherSegError as exc:
            log.info("refused a message: %s: %s", type(exc).__name__, exc)
            return _error(400, type(exc).__name__, str(exc))
        except Exception:  # the owner gets a clear answer; the details stay in the centre's log
            log.exception("the centre failed on a message")
            return _error(500, "InternalError", "the compute centre failed on this message; "
                          "its operator has the details in the service log")
        return Response(reply, media_type=CONTENT_TYPE)

    @app.get(STATUS_PATH)
    async def status(request: Request) -> Response:
        if not authorised(request):
            return _error(401, "TransportError", "missing or wrong access token")
        body: dict[str, Any] = {
            "pid": os.getpid(),
            "holds_secret_key": centre.holds_secret_key(),
            "sessions": len(centre.contexts()),
            "modules": sorted(m for m in sys.modules if m.startswith("cipherseg")),
        }
        return JSONResponse(body)

    return app


def serve_centre(centre: ComputeCentre, *, host: str, port: int, token: str | None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Run the centre's app with uvicorn until interrupted."""
    import uvicorn

    app = create_centre_app(centre, token=token, max_message_bytes=max_message_bytes)
    uvicorn.run(app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                log_level="info", timeout_keep_alive=30)


class CentreService:
    """``cipherseg centre serve`` in a child process on a free loopback port, for tests and
    benchmarks: ``with CentreService(token_file, workers=2) as url: …`` (its log goes to
    ``token_file + ".log"``)."""

    def __init__(self, token_file: str | os.PathLike[str], *, workers: int = 1,
                 tls: tuple[str, str] | None = None, startup_seconds: float = 60.0) -> None:
        self.token_file = os.fspath(token_file)
        self.tls = tls  # (certificate file, key file); the certificate also verifies
        self.log_path = self.token_file + ".log"
        self.workers = workers
        self.startup_seconds = startup_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> str:
        from cipherseg.errors import TransportError
        from cipherseg.transport.http import HttpTransport

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        exe = os.path.join(os.path.dirname(sys.executable), "cipherseg")
        with open(self.log_path, "ab") as log_file:  # a pipe nobody reads would fill and block
            tls_args = ["--ssl-certfile", self.tls[0], "--ssl-keyfile", self.tls[1]] \
                if self.tls else []
            self._proc = subprocess.Popen(
                [exe, "centre", "serve", "--port", str(port), "--token-file", self.token_file,
                 "--workers", str(self.workers), *tls_args],
                stdout=log_file, stderr=subprocess.STDOUT)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_seconds
        while True:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    token = f.read().strip()
                HttpTransport(self.url, token=token,
                              verify=self.tls[0] if self.tls else True).status()
                return self.url
            except (OSError, TransportError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    with open(self.log_path, encoding="utf-8", errors="replace") as f:
                        tail = f.read()[-2000:]
                    raise RuntimeError(f"the centre service did not start:\n{tail}") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
