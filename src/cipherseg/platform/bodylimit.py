"""Request bodies bounded before anything parses them.

An ASGI middleware in front of the whole app:

* each route has a body limit: the routes that take an uploaded file accept
  ``CIPHERSEG_MAX_UPLOAD_MB`` (plus room for the form around the file), every other route
  ``CIPHERSEG_MAX_BODY_KB`` (1 MB by default);
* a declared ``Content-Length`` above the limit is refused (413) before one byte is read;
  bodies without one (chunked) are counted as they arrive and refused the moment they pass
  the limit (the app is told the client went away, so the form parser stops and closes its
  temporary file);
* a request with a body to a route that needs a login, without a live session, is
  answered (303 to the login page, or 401 on the API) without reading its body, and so is
  one whose user lacks the route's permission (403);
* every refusal closes the connection (``Connection: close``), so the server does not
  have to drain what the client still sends.

Anonymous clients can therefore make the server hold at most the 1 MB of one form (that
Starlette keeps in memory) per request, and only on the few public routes.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import UploadFile
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Room for the multipart framing and the small fields sent with an uploaded file.
FORM_OVERHEAD = 64 * 1024


@dataclass(frozen=True)
class RoutePolicy:
    limit: int
    public: bool
    what: str
    #: The route's Allow (None: public or undeclared).
    allow: Any = None


def _allows(route: APIRoute) -> list[Any]:
    from cipherseg.platform.deps import Allow

    found: list[Any] = []

    def walk(dep: Any) -> None:
        if isinstance(dep.call, Allow):
            found.append(dep.call)
        for sub in dep.dependencies:
            walk(sub)

    walk(route.dependant)
    return found


def _takes_file(route: APIRoute) -> bool:
    for field in route.dependant.body_params:
        annotation = getattr(field.field_info, "annotation", None)
        if annotation is UploadFile or "UploadFile" in repr(annotation):
            return True
    return False


def _too_large(limit: int, what: str) -> str:
    if what == "upload":
        return (f"the file is larger than {limit // (1 << 20)} MB; split it or raise "
                "CIPHERSEG_MAX_UPLOAD_MB")
    return f"the request body is larger than {limit // 1024} kB; nothing was read"


class BodyLimit:
    """The middleware (see the module's docstring). ``session_of(scope)`` returns the role
    and permissions of the request's live login session, or ``None`` (a blocking call: run
    in a thread)."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], list[Any]], upload_limit: int,
                 default_limit: int,
                 session_of: Callable[[Scope], tuple[Any, frozenset[Any]] | None]) -> None:
        self.app = app
        self._routes = routes
        self.upload_limit = upload_limit
        self.default_limit = default_limit
        self._session_of = session_of
        self._policies: list[tuple[re.Pattern[str], frozenset[str], RoutePolicy]] | None = None

    def _table(self) -> list[tuple[re.Pattern[str], frozenset[str], RoutePolicy]]:
        if self._policies is None:
            table = []
            for rc in iter_route_contexts(self._routes()):
                route = rc.original_route
                if not isinstance(route, APIRoute):
                    continue
                allows = _allows(route)
                public = not allows or all(a.public_route for a in allows)
                upload = _takes_file(route)
                regex, _fmt, _conv = compile_path(rc.path or route.path)
                table.append((regex, frozenset(rc.methods or ()), RoutePolicy(
                    limit=self.upload_limit + FORM_OVERHEAD if upload else self.default_limit,
                    public=public, what="upload" if upload else "body",
                    allow=None if public else allows[0])))
            self._policies = table
        return self._policies

    def policy(self, scope: Scope) -> RoutePolicy:
        """The policy of the route ``scope`` goes to (unknown routes: the default, public,
        since they answer 404/405 without reading)."""
        path, method = scope.get("path", ""), scope.get("method", "")
        for regex, methods, policy in self._table():
            if method in methods and regex.match(path):
                return policy
        return RoutePolicy(self.default_limit, True, "body")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared_raw = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        try:
            declared = int(declared_raw) if declared_raw is not None else None
        except ValueError:
            await _refuse(scope, send, 400, "the Content-Length header is not a number")
            return
        if declared is not None and declared < 0:
            await _refuse(scope, send, 400, "the Content-Length header is negative")
            return
        policy = self.policy(scope)
        if declared is not None and declared > policy.limit:
            await _refuse(scope, send, 413, _too_large(policy.limit, policy.what))
            return
        has_body = chunked or bool(declared)
        if has_body and not policy.public:
            session = await anyio.to_thread.run_sync(self._session_of, scope)
            if session is None:
                await _login_first(scope, send)
                return
            if policy.allow is not None and not policy.allow.admits(*session):
                await _refuse(scope, send, 403, "your role may not do this; nothing was read")
                return
        await self._counted(scope, receive, send, policy)

    async def _counted(self, scope: Scope, receive: Receive, send: Send,
                       policy: RoutePolicy) -> None:
        state = {"received": 0, "refused": False, "started": False}

        async def counting_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > policy.limit:
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _refuse(scope, send, 413, _too_large(policy.limit, policy.what))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the refusal was sent; whatever the app answers now is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise


_PAGE = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
         '<title>Not accepted</title><link rel="stylesheet" href="/static/app.css"></head>'
         '<body><main class="container"><h1>Not accepted ({status})</h1>'
         '<p class="error">{message}.</p><p>Nothing was stored. Go back with your '
         'browser, or to <a href="/">your start page</a>.</p></main></body></html>')


def _wants_json(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith("/api/")


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    if _wants_json(scope):
        body = json.dumps({"detail": message}).encode()
        ctype = b"application/json"
    else:
        body = _PAGE.format(status=status,
                            message=html.escape(message[:1].upper() + message[1:])).encode()
        ctype = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", b"default-src 'none'; style-src 'self'"),
        (b"x-frame-options", b"DENY")]})
    await send({"type": "http.response.body", "body": body})


async def _login_first(scope: Scope, send: Send) -> None:
    if _wants_json(scope):
        await _refuse(scope, send, 401, "log in first (POST /login)")
        return
    await send({"type": "http.response.start", "status": 303, "headers": [
        (b"location", b"/login"), (b"content-length", b"0"), (b"connection", b"close"),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b""})
