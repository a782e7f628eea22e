"""The FastAPI application factory.

>>> import tempfile
>>> from cipherseg.platform.core.config import Settings
>>> from cipherseg.platform.db import make_engine
>>> from cipherseg.platform.migrate import upgrade
>>> s = Settings(data_dir=tempfile.mkdtemp(), environment="test", worker_threads=0)
>>> upgrade(make_engine(s.resolved_database_url()))
>>> app = create_app(s)
>>> from fastapi.testclient import TestClient
>>> TestClient(app).get("/healthz").text
'ok'
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from cipherseg import __version__
from cipherseg.errors import CipherSegError, ParameterError
from cipherseg.pii.masking import PhoneRedactingFilter, redact_record
from cipherseg.pii.vault import PiiVault
from cipherseg.platform.bodylimit import BodyLimit
from cipherseg.platform.core.config import Settings
from cipherseg.platform.db import make_engine, make_sessionmaker
from cipherseg.platform.deps import (
    AnyUser,
    LoginRequired,
    PasswordChangeRequired,
    PlatformContext,
)
from cipherseg.platform.jobs import Runner, Worker, register_kinds, registered_kinds
from cipherseg.platform.migrate import current_revision, head_revision
from cipherseg.platform.models import JobKind, Role
from cipherseg.platform.permissions import Permission
from cipherseg.platform.proxies import TrustedProxyHeaders, parse_trusted
from cipherseg.platform.rotation import FileBackedVault
from cipherseg.platform.routes import account, admin, api, auth, owner, requests, views
from cipherseg.platform.security import TokenSigner

log = logging.getLogger("cipherseg.platform")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
_HEADINGS = {400: "That did not work", 403: "Not allowed", 404: "Not found",
             405: "Not allowed", 409: "Not now", 422: "Invalid input", 429: "Slow down"}


class SecurityHeaders(BaseHTTPMiddleware):
    """CSP, no framing, no sniffing, no referrer, no caching of pages."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "no-referrer")
        if not request.url.path.startswith("/static/"):
            h.setdefault("Cache-Control", "no-store")
        return response


#: Query parameters that carry a secret: the inbound-SMS token (its holder can opt out any
#: number) and the delivery-report signature. Access logs show them as ``[redacted]``.
SECRET_QUERY_PARAMS = ("token", "k")
_SECRET_QUERY = re.compile(r"([?&](?:" + "|".join(SECRET_QUERY_PARAMS) + r")=)[^&\s\"']*")


def redact_secret_params(text: str) -> str:
    """``text`` with the values of :data:`SECRET_QUERY_PARAMS` in URLs replaced.

    >>> redact_secret_params('"GET /gateway/kannel/dlr?m=7&a=1&k=9f3c&s=1 HTTP/1.1" 200')
    '"GET /gateway/kannel/dlr?m=7&a=1&k=[redacted]&s=1 HTTP/1.1" 200'
    """
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class SecretParamFilter(logging.Filter):
    """Redacts callback tokens and signatures from every record (uvicorn's access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record, redact_secret_params)
        return True


def install_log_redaction(region: str) -> None:
    """Mask phone numbers and callback secrets in every log record of the process (root,
    uvicorn's and cipherseg's loggers and their handlers)."""
    filters: list[logging.Filter] = [PhoneRedactingFilter(region), SecretParamFilter()]
    for name in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "cipherseg"):
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            for flt in filters:
                if not any(isinstance(f, type(flt)) for f in target.filters):
                    target.addFilter(flt)


def make_context(settings: Settings) -> PlatformContext:
    """Engine, sessions, vault, signer and templates for ``settings`` (checks the schema)."""
    settings.check_secrets()
    engine = make_engine(settings.resolved_database_url())
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise ParameterError(f"the database schema is at {current or 'nothing'}, this "
                             f"cipherseg needs {head}; run `cipherseg db upgrade` first")
    templates = Jinja2Templates(directory=str(resources.files("cipherseg.platform")
                                              / "templates"))
    templates.env.globals["version"] = __version__
    return PlatformContext(settings=settings, engine=engine,
                           sessions=make_sessionmaker(engine),
                           vault=(PiiVault(settings.pii_keyring)
                                  if settings.pii_keyring_from_env
                                  else FileBackedVault(settings.pii_keyring_path)),
                           signer=TokenSigner(settings.session_secret), templates=templates)


#: Modules that extend the platform, one line each (e.g. the campaigns of
#: ``cipherseg.messaging``). Each may define ``router`` (an ``APIRouter`` whose routes declare
#: their permission with ``Allow``), ``job_kinds`` (the :class:`JobKind` s it adds, which
#: ``create_app`` registers with the queue) and ``runners(ctx) -> dict[kind, Runner]`` (their
#: background runners), ``nav`` (``((href, label, permission), ...)`` links appended to the
#: navigation of users holding the permission), ``on_revoke(ctx, session, job_id,
#: merchant)`` (called when a release grant is revoked:
#: :func:`cipherseg.platform.services.grants.revoke`) and
#: ``startup(ctx)`` (called when the server starts; must not block).
PLATFORM_EXTENSIONS: tuple[str, ...] = (
    "cipherseg.platform.joint",
    "cipherseg.platform.campaigns",
    "cipherseg.platform.nodes",
    "cipherseg.platform.vertical",
)


def _extensions() -> list[Any]:
    import importlib

    return [importlib.import_module(name) for name in PLATFORM_EXTENSIONS]


def register_job_kinds() -> frozenset[JobKind]:
    """Make the job queue accept the job kinds of the platform's extensions (each module's
    ``job_kinds``); an extension's module defines them, nothing registers on import."""
    register_kinds(kind for ext in _extensions() for kind in getattr(ext, "job_kinds", ()))
    return registered_kinds()


def job_runners(ctx: PlatformContext) -> dict[str, Runner]:
    """The worker's runner per job kind (the platform's and the extensions')."""
    from cipherseg.platform.services.segmentation import make_segmentation_runner
    from cipherseg.platform.services.uploads import make_import_runner

    runners: dict[str, Runner] = {JobKind.IMPORT: make_import_runner(ctx),
                                  JobKind.SEGMENTATION: make_segmentation_runner(ctx)}
    for ext in _extensions():
        if hasattr(ext, "runners"):
            runners.update(ext.runners(ctx))
    return runners


def make_worker(ctx: PlatformContext, threads: int | None = None) -> Worker:
    """A worker bound to this context (not started)."""
    s = ctx.settings
    register_job_kinds()
    return Worker(ctx.sessions, job_runners(ctx),
                  threads=s.worker_threads if threads is None else threads,
                  poll_seconds=s.worker_poll_seconds)


def _session_of(ctx: PlatformContext, scope: Any) -> tuple[Role, frozenset[Permission]] | None:
    """The role and permissions of the live session the request's cookie opens, if any."""
    from starlette.requests import cookie_parser

    from cipherseg.platform.deps import role_permissions
    from cipherseg.platform.security import SESSION_COOKIE, load_session

    raw = b"; ".join(v for k, v in scope.get("headers") or [] if k == b"cookie")
    value = cookie_parser(raw.decode("latin-1")).get(SESSION_COOKIE) if raw else None
    token = ctx.signer.unsign(value) if value else None
    if not token:
        return None
    with ctx.sessions() as db:
        found = load_session(db, token)
        if found is None:
            return None
        role = found[1].role_enum
        return role, role_permissions(db, role)


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/")


def create_app(settings: Settings | None = None, *, context: PlatformContext | None = None,
               start_worker: bool | None = None) -> FastAPI:
    """Build the app. The worker threads start with the app unless ``worker_threads=0``."""
    ctx = context or make_context(settings or Settings())
    install_log_redaction(ctx.settings.default_region)
    run_worker = ctx.settings.worker_threads > 0 if start_worker is None else start_worker
    register_job_kinds()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # uvicorn configures its loggers after the app is built: attach the filter again
        install_log_redaction(ctx.settings.default_region)
        for ext in _extensions():
            if hasattr(ext, "startup"):
                ext.startup(ctx)
        worker = make_worker(ctx) if run_worker else None
        if worker is not None:
            worker.start()
        app.state.worker = worker
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(title="cipherseg platform", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.platform = ctx
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, routes=lambda: app.routes,
                       upload_limit=ctx.settings.max_upload_mb << 20,
                       default_limit=ctx.settings.max_body_kb << 10,
                       session_of=lambda scope: _session_of(ctx, scope))
    # outermost: every layer inside sees the client address the trusted proxy reported
    app.add_middleware(TrustedProxyHeaders,
                       trusted=parse_trusted(ctx.settings.trusted_proxies))
    app.mount("/static", StaticFiles(packages=[("cipherseg.platform", "static")]),
              name="static")
    for module in (auth, account, admin, owner, requests, views, api):
        app.include_router(module.router)
    from cipherseg.platform.routes.common import NAV

    for ext in _extensions():
        if hasattr(ext, "router"):
            app.include_router(ext.router)
        NAV.extend(link for link in getattr(ext, "nav", ()) if link not in NAV)
        if hasattr(ext, "on_revoke") and ext.on_revoke not in ctx.revocation_listeners:
            ctx.revocation_listeners.append(ext.on_revoke)
    _install_openapi_route(app)
    _install_handlers(app, ctx)
    return app


def _install_openapi_route(app: FastAPI) -> None:
    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def openapi(_user: AnyUser) -> JSONResponse:
        """The API's OpenAPI schema (logged-in users only)."""
        return JSONResponse(app.openapi())


def _install_handlers(app: FastAPI, ctx: PlatformContext) -> None:
    def error_page(request: Request, status: int, message: str) -> Response:
        from cipherseg.platform.routes.common import render

        return render(request, ctx, "error.html", status_code=status, status_code_=status,
                      heading=_HEADINGS.get(status, "Something went wrong"), message=message)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _exc: LoginRequired) -> Response:
        if _wants_html(request):
            target = request.url.path
            if request.url.query:
                target += "?" + request.url.query
            nxt = target if request.method == "GET" else ""
            from urllib.parse import quote

            return RedirectResponse("/login" + (f"?next={quote(nxt)}" if nxt else ""),
                                    status_code=303)
        return JSONResponse({"detail": "log in first (POST /login)"}, status_code=401)

    @app.exception_handler(PasswordChangeRequired)
    async def password_change_required(request: Request,
                                       _exc: PasswordChangeRequired) -> Response:
        if _wants_html(request):
            return RedirectResponse(auth.PASSWORD_PAGE, status_code=303)
        return JSONResponse({"detail": "you logged in with a temporary password: change it "
                                       "first (POST /api/v1/me/password)"}, status_code=403)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_html(request) and exc.status_code != 405:
            return error_page(request, exc.status_code, str(exc.detail))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_html(request):
            return error_page(request, 422, "Some fields were missing or invalid; go back and "
                                            "check the form.")
        errors: list[dict[str, Any]] = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(CipherSegError)
    async def domain_error(request: Request, exc: CipherSegError) -> Response:
        if _wants_html(request):
            return error_page(request, 400, str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=400)


__all__ = ["HTTPException", "create_app", "make_context", "make_worker"]
