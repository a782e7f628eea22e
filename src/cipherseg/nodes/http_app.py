"""The HTTP front both joint services share: authentication, limits, the mailbox routes.

================================================ ============================================
``POST /v1/joint/sessions``                      open or join a session (JSON; what it means
                                                 is the service's: :mod:`~.centre_service`,
                                                 :mod:`~.manager_service`)
``POST /v1/joint/sessions/{id}/messages``        one message (bytes) of the session's protocol
                                                 (4.2 or 4.5: :mod:`~.hosts`) from the caller
                                                 to the service's party
``GET  /v1/joint/sessions/{id}/mailbox``         long poll: the next message for the caller
                                                 after ``after`` (200, bytes; headers
                                                 ``X-Cipherseg-Seq``/``-Sender``), or 204
                                                 after ``wait`` s (``X-Cipherseg-State``)
``POST /v1/joint/sessions/{id}/abort``           end the session on a failure (JSON reason)
``GET  /v1/joint/sessions/{id}``                 state, failure reason, contacts
``GET  /v1/joint/status``                        the service's sessions (counts only)
================================================ ============================================

Every route needs ``Authorization: Bearer <token>``; the token names the node (an owners
file of :mod:`cipherseg.transport.tokens`, one line per node and one for the manager). A
session answers only the nodes it names: anyone else's request for it is refused exactly as
for an unknown session (404). Limits, checked before anything is parsed: a message larger
than ``max_message_bytes`` is refused with 413 as soon as its declared or received length
says so, a body that takes longer than ``body_timeout`` with 408, JSON documents above
64 kB with 413, more than ``max_polls_per_node`` concurrent long polls of one node with 429;
a message of another protocol or whose envelope names another session is refused (400)
without reaching the party. Tokens are compared by digest and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cipherseg.errors import CipherSegError, ParameterError, ProtocolError
from cipherseg.nodes import wire
from cipherseg.nodes.board import HostedSession
from cipherseg.nodes.wire import JointAborted, clean_reason
from cipherseg.protocols.messages import Message, peek_envelope
from cipherseg.transport.tokens import Authenticator

log = logging.getLogger("cipherseg.nodes")


class Host(Protocol):
    """The protocol-specific side of a service."""

    title: str
    protocol: str

    def open(self, caller: str, document: dict[str, Any]) -> dict[str, Any]:
        """Open or join a session; PermissionError: the caller may not."""
        ...

    def session(self, session_id: str) -> HostedSession | None: ...

    def party_of(self, session: HostedSession, caller: str) -> str | None:
        """The caller's party name in ``session``, or None if it takes no part."""
        ...

    def aborted(self, session: HostedSession, caller: str) -> None:
        """A participant aborted ``session`` (tell the other services)."""
        ...

    def sweep(self) -> None:
        """Fail sessions whose parties stopped making contact; forget old ones."""
        ...

    def status(self) -> dict[str, Any]: ...


def error(status: int, name: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": name, "detail": detail}, status_code=status,
                        headers=headers or None)


def unknown_session(session_id: str) -> JSONResponse:
    return error(404, "UnknownSession", f"no joint session {session_id[:64]!r} of yours here")


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def create_app(host: Host, auth: Authenticator, *,
               max_message_bytes: int = wire.DEFAULT_MAX_MESSAGE_BYTES,
               body_timeout: float = 120.0, max_polls_per_node: int = 4,
               sweep_seconds: float = 1.0) -> FastAPI:
    """The service's ASGI app around ``host``."""
    polls: defaultdict[str, int] = defaultdict(int)
    polls_lock = threading.Lock()

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(sweep_seconds)
            try:
                await run_in_threadpool(host.sweep)
            except Exception:  # the sweeper must outlive any one failure
                log.exception("sweeping sessions failed")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sweeper())
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(title=host.title, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)

    def caller_of(request: Request) -> str | Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        try:
            name = auth.owner_of(given) if scheme == "Bearer" and given else None
        except ParameterError:
            log.exception("cannot read the nodes' tokens")
            return error(503, "TransportError", "the service cannot read its list of nodes; "
                         "its operator has the details in the service log")
        if name is None:
            return error(401, "TransportError", "missing or wrong access token")
        return name

    async def body_of(request: Request, limit: int) -> bytes | Response:
        try:
            body = await asyncio.wait_for(read_limited(request, limit), timeout=body_timeout)
        except TimeoutError:
            return error(408, "TransportError", f"the body did not arrive within "
                         f"{body_timeout:.0f} s")
        if body is None:
            return error(413, "TransportError", f"body exceeds this service's limit of "
                         f"{limit:,} bytes")
        return body

    def bound(request: Request, session_id: str) -> tuple[str, HostedSession, str] | Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        session = host.session(session_id) if wire.SESSION_ID.fullmatch(session_id) else None
        party = host.party_of(session, caller) if session is not None else None
        if session is None or party is None:
            if session is not None:
                log.warning("node %s: refused a request for a session it takes no part in",
                            caller)
            return unknown_session(session_id)
        return caller, session, party

    def aborted(exc: JointAborted) -> JSONResponse:
        return error(410, "JointAborted", str(exc))

    @app.post(wire.SESSIONS)
    async def open_session(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        body = await body_of(request, wire.MAX_JSON_BYTES)
        if isinstance(body, Response):
            return body
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return error(400, "ValidationError", f"the body must be a JSON object ({exc})")
        try:
            answer = await run_in_threadpool(host.open, caller, document)
        except PermissionError as exc:
            return error(403, "PermissionError", str(exc))
        except JointAborted as exc:
            return aborted(exc)
        except CipherSegError as exc:
            return error(400, type(exc).__name__, str(exc))
        return JSONResponse(answer)

    @app.post(wire.SESSIONS + "/{session_id}/messages")
    async def post_message(request: Request, session_id: str) -> Response:
        who = bound(request, session_id)
        if isinstance(who, Response):
            return who
        caller, session, party = who
        body = await body_of(request, max_message_bytes)
        if isinstance(body, Response):
            return body
        try:
            _, sid = peek_envelope(body)
            if sid != session.session_id:
                raise ProtocolError(f"a message of session {sid[:64]!r} posted to session "
                                    f"{session.session_id!r}")
            message = Message.from_bytes(body)
            # A service hosting several protocols (:class:`~.hosts.Hosts`) says each session's.
            protocol_of = getattr(host, "protocol_of", None)
            expected = protocol_of(session) if protocol_of is not None else host.protocol
            if expected != message.PROTOCOL:
                raise ProtocolError(f"a {message.PROTOCOL} message is not one of {expected}")
        except CipherSegError as exc:
            return error(400, type(exc).__name__, str(exc))
        try:
            await run_in_threadpool(session.deliver, party, message, len(body))
        except JointAborted as exc:
            return aborted(exc)
        except CipherSegError as exc:
            log.info("node %s: refused a message: %s", caller, exc)
            return error(400, type(exc).__name__, str(exc))
        return Response(status_code=202)

    @app.get(wire.SESSIONS + "/{session_id}/mailbox")
    async def mailbox(request: Request, session_id: str, after: int = 0,
                      wait: float = 10.0) -> Response:
        who = bound(request, session_id)
        if isinstance(who, Response):
            return who
        caller, session, party = who
        if after < 0 or not 0 <= wait <= wire.MAX_POLL_WAIT:
            return error(400, "ValidationError", f"need after >= 0 and 0 <= wait <= "
                         f"{wire.MAX_POLL_WAIT:.0f}")
        with polls_lock:
            if polls[caller] >= max_polls_per_node:
                return error(429, "TransportError", f"more than {max_polls_per_node} "
                             "concurrent polls from one node")
            polls[caller] += 1
        try:
            item = await run_in_threadpool(session.poll, party, after=after, wait=wait)
        except JointAborted as exc:
            return aborted(exc)
        finally:
            with polls_lock:
                polls[caller] -= 1
        if item is None:
            return Response(status_code=204, headers={wire.STATE_HEADER: session.state})
        return Response(item.data, media_type=wire.CONTENT_TYPE, headers={
            wire.SEQ_HEADER: str(item.seq), wire.SENDER_HEADER: item.sender,
            wire.STATE_HEADER: session.state})

    @app.post(wire.SESSIONS + "/{session_id}/abort")
    async def abort(request: Request, session_id: str) -> Response:
        who = bound(request, session_id)
        if isinstance(who, Response):
            return who
        caller, session, _ = who
        body = await body_of(request, wire.MAX_JSON_BYTES)
        if isinstance(body, Response):
            return body
        try:
            reason = json.loads(body).get("reason", "")
        except (ValueError, AttributeError):
            reason = ""
        session.abort(f"{caller} ended the session: {clean_reason(str(reason))}")
        await run_in_threadpool(host.aborted, session, caller)
        return JSONResponse({"state": session.state, "failure": session.failure})

    @app.get(wire.SESSIONS + "/{session_id}")
    async def session_status(request: Request, session_id: str) -> Response:
        who = bound(request, session_id)
        if isinstance(who, Response):
            return who
        _, session, party = who
        session.touch(party)
        return JSONResponse({"session": session.session_id, "state": session.state,
                             "failure": session.failure})

    @app.get(wire.STATUS)
    async def status(request: Request) -> Response:
        caller = caller_of(request)
        if isinstance(caller, Response):
            return caller
        return JSONResponse({**host.status(), "caller": caller})

    return app
