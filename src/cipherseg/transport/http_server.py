"""HTTP server side of the party contract: any request/response party behind one service.

Server side of :mod:`cipherseg.transport.http`. :func:`create_party_app` puts a party hosted
in its own process (a :class:`~cipherseg.transport.pipes.PartyProcess`, or anything with the
same ``request_bytes``/``hello``/``alive``/``restart``) behind HTTP, once for every
request/response protocol; a protocol's service (:mod:`cipherseg.hosting.centre_http` for
4.1) only says which message types open and close a session and how it refuses an unknown
one (:class:`SessionRules`).

=================== ===========================================================================
``POST /v1/messages`` body: one protocol message (bytes); reply: the party's message
``GET /v1/status``    the caller's owner name and open sessions and the keys of the party's
                      status listed public (a self-report: it proves nothing to an owner);
                      with one shared token or none, the party's whole status
=================== ===========================================================================

Both need ``Authorization: Bearer <token>`` when the service has a token: one shared token,
or one per owner (:mod:`cipherseg.transport.tokens`). Session ids are per owner (the token
that opened them): another owner's session id is, to an owner, exactly an unknown one — a
message for it, for a session the front did not see opened, or one whose envelope it cannot
read is refused as for an unknown session without reaching the party, and a message that
opens a session under it opens the owner's own (with one shared token, all owners are one
owner; the party itself keys sessions by the sender the front names). A refusal of the party
answers HTTP 400 with ``{"error": <cipherseg error class>, "detail": …}``; a message larger
than ``max_message_bytes`` answers 413 as soon as it is known to be.

Bodies are read as they arrive, into memory that holds what arrived (never sized from
``Content-Length``); each owner may have ``bodies_per_owner`` bodies arriving at once (more
answer 429 at once), a body that makes no progress for ``stall_seconds`` is dropped (408),
and one that takes longer than ``body_timeout`` in all too. An owner that stalls its bodies
therefore holds neither memory nor the other owners' turn. Messages are handled one at a time
(the party's block work is parallel inside each message). Every ``sweep_seconds`` the service
asks the party's status (which drops its idle sessions). If the party's process dies, the
failed request answers 503 and a new process is started (sessions lost). Tokens are compared
by their SHA-256 digest (in constant time for a shared token) and never logged.
"""


from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cipherseg.errors import CipherSegError, ParameterError, ProtocolError
from cipherseg.protocols.messages import peek_envelope
from cipherseg.transport.http import CONTENT_TYPE, MESSAGES_PATH, REFUSAL_PREFIX, STATUS_PATH
from cipherseg.transport.tokens import Authenticator, SharedToken, token_digest

DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024**3  # the upload of ~25 M customers × 3 features
log = logging.getLogger("cipherseg.centre")


@dataclass(frozen=True, slots=True)
class SessionRules:
    """What the front needs to know of a protocol's sessions: the message types that open and
    close one, how the protocol refuses a message for an unknown session, and the keys of the
    party's status any owner may see."""

    opens: frozenset[str]
    closes: frozenset[str]
    unknown: Callable[[str], ProtocolError]
    public_status: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Caller:
    name: str  # the owner's name, for the log ("" without authentication)
    key: str  # the digest of the token it presented; sessions are bound to it

    @property
    def sender(self) -> str:
        """Its party name at the centre, which binds sessions to it too."""
        return f"owner-{self.key}" if self.key else "owner"


@dataclass(slots=True)
class _OpenSession:
    caller: _Caller
    last_seen: float


class _Stalled(Exception):
    """A body made no progress for the stall limit."""


class CentreLink(Protocol):
    """What the service needs of the party's process: a
    :class:`~cipherseg.transport.pipes.PartyProcess` provides it."""

    def request_bytes(self, data: bytes | bytearray, *, sender: str) -> bytes: ...

    def hello(self) -> dict[str, Any]: ...

    def alive(self) -> bool: ...

    def restart(self) -> None: ...


async def _read_body(request: Request, limit: int, stall_seconds: float) -> bytes | None:
    """The request body as it arrives (memory holds the chunks received, whatever the
    declared length; one join at the end), or None once it exceeds ``limit``;
    :class:`_Stalled` if no chunk arrives for ``stall_seconds``."""
    received: list[bytes] = []
    size = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout=stall_seconds)
        except StopAsyncIteration:
            return b"".join(received)
        except TimeoutError:
            raise _Stalled from None
        size += len(chunk)
        if size > limit:
            return None
        received.append(chunk)


def _error(status: int, name: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail}, status_code=status)


def create_party_app(centre: CentreLink, rules: SessionRules, *, title: str,
                     token: str | None = None, owners: Authenticator | None = None,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     sweep_seconds: float = 60.0, body_timeout: float = 600.0,
                     session_idle_seconds: float | None = None, stall_seconds: float = 30.0,
                     bodies_per_owner: int = 2) -> FastAPI:
    """The service's ASGI app in front of the party process ``centre``, whose sessions follow
    ``rules``. ``token``: one token for all owners;
    ``owners``: one per owner (an :class:`~cipherseg.transport.tokens.OwnersFile`); neither:
    no authentication (the CLI allows it on loopback only). ``session_idle_seconds`` is the
    centre's limit, after which the front forgets whose a session was."""
    if token is not None and owners is not None:
        raise ParameterError("give the service one shared token or an owners file, not both")
    auth: Authenticator | None = owners if owners is not None else (
        SharedToken(token) if token else None)
    lock = asyncio.Lock()  # one message (or status) at a time: the link is one pipe
    # Bodies arriving per owner (token digest): an owner that stalls its bodies holds its own
    # slots only, never another owner's, and a stalled body is dropped after stall_seconds.
    arriving: dict[str, int] = {}
    # (owner's token digest, session id) -> the open session; read and written under the
    # lock only. The front and the centre process start and restart together, so an id
    # missing here is unknown there too.
    sessions: dict[tuple[str, str], _OpenSession] = {}

    async def run_on_centre(fn: Callable[..., Any], *args: Any, owner: str = "") -> Any:
        """``fn(*args)`` on the centre (the caller holds the lock); failures as JSON."""
        try:
            return await run_in_threadpool(fn, *args)
        except CipherSegError as exc:
            log.info("owner %s: refused a message: %s: %s", owner or "-", type(exc).__name__,
                     exc)
            return _error(400, type(exc).__name__, str(exc).removeprefix(REFUSAL_PREFIX))
        except Exception:  # the owner gets a clear answer; the details stay in the log
            log.exception("the centre failed")
            if not centre.alive():
                await run_in_threadpool(centre.restart)
                sessions.clear()
                log.warning("the centre process had stopped; started a new one")
                return _error(503, "TransportError", "the compute centre process stopped "
                              "and was restarted; its open sessions are lost: run the fit "
                              "again")
            return _error(500, "InternalError", "the compute centre failed on this message;"
                          " its operator has the details in the service log")

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        async with lock:
            return await run_on_centre(fn, *args)

    async def relay(body: bytes, caller: _Caller) -> Any:
        """One message to the centre if it opens a session or its session is the caller's;
        records who opened a session. Check, relay and record under one hold of the lock."""
        try:
            kind, sid = peek_envelope(body)
        except ProtocolError as exc:
            return _error(400, type(exc).__name__, str(exc))
        async with lock:
            bound = sessions.get((caller.key, sid))
            if kind not in rules.opens and bound is None:
                refusal = rules.unknown(sid)
                return _error(400, type(refusal).__name__, str(refusal))
            reply = await run_on_centre(functools.partial(centre.request_bytes,
                                                          sender=caller.sender), body,
                                        owner=caller.name)
            if isinstance(reply, Response):
                return reply
            if kind in rules.opens:
                sessions[caller.key, sid] = _OpenSession(caller, time.monotonic())
                log.info("owner %s opened session %s…", caller.name or "-", sid[:8])
            elif kind in rules.closes:
                sessions.pop((caller.key, sid), None)
            elif bound is not None:
                bound.last_seen = time.monotonic()
            return reply

    async def sweep() -> None:
        while True:
            await asyncio.sleep(sweep_seconds)
            async with lock:
                status = await run_on_centre(centre.hello)  # hello drops idle sessions
                if isinstance(status, dict) and status.get("sessions") == 0:
                    sessions.clear()
                elif session_idle_seconds is not None:
                    cutoff = time.monotonic() - session_idle_seconds
                    for sid in [s for s, o in sessions.items() if o.last_seen < cutoff]:
                        del sessions[sid]

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sweep())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title=title, docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan)

    def caller_of(request: Request) -> _Caller | Response:
        """Who sends ``request`` (an anonymous caller without authentication), or the
        refusal."""
        if auth is None:
            return _Caller("", "")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        try:
            owner = auth.owner_of(given) if scheme == "Bearer" and given else None
        except ParameterError:
            log.exception("cannot read the owners")
            return _error(503, "TransportError", "the compute centre cannot read its list of "
                          "owners; its operator has the details in the service log")
        if owner is None:
            return _error(401, "TransportError", "missing or wrong access token")
        return _Caller(owner, token_digest(given))

    def too_large(size: int) -> JSONResponse:
        return _error(413, "TransportError", f"message of {size:,}+ bytes exceeds this centre's "
                      f"limit of {max_message_bytes:,} (--max-message-mb)")

    @app.post(MESSAGES_PATH)
    async def message(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_message_bytes:
            return too_large(int(declared))
        if arriving.get(caller.key, 0) >= bodies_per_owner:
            return _error(429, "TransportError", f"{bodies_per_owner} messages of this owner "
                          "are already arriving; send the next one when they have")
        arriving[caller.key] = arriving.get(caller.key, 0) + 1
        try:
            body = await asyncio.wait_for(_read_body(request, max_message_bytes,
                                                     stall_seconds), timeout=body_timeout)
        except _Stalled:
            return _error(408, "TransportError", f"the message stopped arriving (nothing for "
                          f"{stall_seconds:.0f} s)")
        except TimeoutError:
            return _error(408, "TransportError", f"the message did not arrive within "
                          f"{body_timeout:.0f} s")
        finally:
            arriving[caller.key] -= 1
            if not arriving[caller.key]:
                del arriving[caller.key]
        if body is None:
            return too_large(max_message_bytes + 1)
        reply = await relay(body, caller)
        if isinstance(reply, Response):
            return reply
        return Response(reply, media_type=CONTENT_TYPE)

    @app.get(STATUS_PATH)
    async def status(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        body = await call(centre.hello)
        if isinstance(body, Response):
            return body
        if owners is None:  # one shared token or none: the caller is the operator
            return JSONResponse({**body, "owner": caller.name or None})
        mine = sum(1 for key, _ in sessions if key == caller.key)
        return JSONResponse({"owner": caller.name, "sessions": mine,
                             **{key: body.get(key) for key in rules.public_status}})

    return app
