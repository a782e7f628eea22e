"""The compute centre as an HTTP service (``cipherseg centre serve``).

Protocol 4.1 on the generic HTTP front of :mod:`cipherseg.transport.http_server` (which
states the routes, the per-owner sessions and the limits). The front holds no ciphertext
work itself: it relays each message to a
:class:`~cipherseg.hosting.centre_process.CentreProcess`
— a single-threaded child process that runs the :class:`~cipherseg.protocols.outsourced.centre.
ComputeCentre` with its executor (so its process pool never forks from a multithreaded
process, and the child starts with no ``CIPHERSEG_*`` environment).

=================== ===========================================================================
``POST /v1/messages`` body: one protocol 4.1 message (bytes); reply: the centre's message
``GET /v1/status``    whether any held context can decrypt, the caller's open sessions and
                      the cipherseg modules the centre process has loaded (a self-report: it
                      proves nothing to an owner); with one shared token or none, also the
                      operator's diagnostics (pid, workers, all sessions)
=================== ===========================================================================

With one token per owner (``--owners-file``) session ids are per owner — another owner's
session id is to an owner exactly an unknown one, an ``Upload`` under it opens the owner's own
session — and an owner's status shows its own sessions only. A refused message (tampered or
truncated ciphertext, out-of-order message, upload block sizes that do not fit the customers
and the slots, a context carrying a secret key) answers HTTP 400 with the error's class.
Bodies are read as they arrive, two per owner at most, a stalled one dropped after 30 s;
idle sessions are dropped after ``session_idle_seconds``; a dead centre process is restarted
(its sessions lost). The details: :mod:`cipherseg.transport.http_server`.

What the service sees is what the centre sees in protocol 4.1 (``docs/security.md``): public
contexts and ciphertexts; neither this module nor the centre process can import key-holding
code (import-linter contract). Tokens are compared by their SHA-256 digest (in constant time
for a shared token) and never logged. Without TLS a network observer sees message sizes and
timing, and an active one can substitute ciphertexts (the envelopes carry a CRC-32, not a
MAC): use TLS.

>>> from fastapi.testclient import TestClient
>>> from cipherseg.hosting.centre_process import CentreProcess
>>> auth = {"Authorization": "Bearer s3cret"}
>>> with CentreProcess(n_jobs=1) as centre:
...     with TestClient(create_centre_app(centre, token="s3cret")) as client:
...         print(client.get("/v1/status").status_code,
...               client.get("/v1/status", headers=auth).json()["holds_secret_key"])
401 False
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from cipherseg.protocols.outsourced.messages import unknown_session
from cipherseg.transport.http_server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CentreLink,
    SessionRules,
    create_party_app,
    log,
)
from cipherseg.transport.tokens import Authenticator

#: Protocol 4.1's sessions: an ``Upload`` opens one, ``Close`` ends it; any owner may see
#: whether a held context can decrypt and which modules the centre process has loaded.
RULES = SessionRules(opens=frozenset({"Upload"}), closes=frozenset({"Close"}),
                     unknown=unknown_session, public_status=("holds_secret_key", "modules"))


def create_centre_app(centre: CentreLink, *, token: str | None = None,
                      owners: Authenticator | None = None,
                      max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                      sweep_seconds: float = 60.0, body_timeout: float = 600.0,
                      session_idle_seconds: float | None = None, stall_seconds: float = 30.0,
                      bodies_per_owner: int = 2) -> FastAPI:
    """``cipherseg centre serve``'s ASGI app in front of the centre process ``centre``
    (:func:`~cipherseg.transport.http_server.create_party_app` with protocol 4.1's rules)."""
    return create_party_app(centre, RULES, title="cipherseg compute centre", token=token,
                            owners=owners, max_message_bytes=max_message_bytes,
                            sweep_seconds=sweep_seconds, body_timeout=body_timeout,
                            session_idle_seconds=session_idle_seconds,
                            stall_seconds=stall_seconds, bodies_per_owner=bodies_per_owner)


def serve_centre(*, host: str, port: int, token: str | None, n_jobs: int, engine: str = "local",
                 owners: Authenticator | None = None,
                 scheduler: str | None = None, session_idle_seconds: float | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
    """Start the centre process and serve it with uvicorn until interrupted."""
    import uvicorn

    from cipherseg.hosting.centre_process import CentreProcess

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s "
                        "%(message)s")
    with CentreProcess(n_jobs=n_jobs, engine=engine, scheduler=scheduler,
                       session_idle_seconds=session_idle_seconds) as centre:
        log.info("centre process %s: %s worker(s)", centre.status.get("pid"),
                 centre.status.get("workers"))
        app = create_centre_app(centre, token=token, owners=owners,
                                max_message_bytes=max_message_bytes,
                                session_idle_seconds=session_idle_seconds)
        uvicorn.run(app, host=host, port=port, ssl_certfile=ssl_certfile,
                    ssl_keyfile=ssl_keyfile, log_level="info", timeout_keep_alive=30)


__all__ = ["RULES", "create_centre_app", "serve_centre"]
