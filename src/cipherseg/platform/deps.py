"""Request dependencies: the platform context, the database session, and role checks.

Every route declares the roles it allows with :class:`Allow`; the role test walks all routes
of the app and fails on any route without one. ``Allow`` also checks the CSRF token of every
state-changing request (form field ``csrf_token`` or header ``X-CSRF-Token``).

>>> Allow(Role.OWNER).roles
frozenset({<Role.OWNER: 'owner'>})
>>> Allow.public().roles is None
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cipherseg.pii.vault import PiiVault
from cipherseg.platform.core.config import Settings
from cipherseg.platform.models import Role, User, WebSession
from cipherseg.platform.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    TokenSigner,
    load_session,
    tokens_equal,
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class PlatformContext:
    """What a running app shares between requests (one per app instance)."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    vault: PiiVault
    signer: TokenSigner
    templates: Jinja2Templates


class LoginRequired(Exception):
    """Raised for anonymous requests; pages redirect to /login, the API answers 401."""


def get_context(request: Request) -> PlatformContext:
    ctx: PlatformContext = request.app.state.platform
    return ctx


ContextDep = Annotated[PlatformContext, Depends(get_context)]


def get_db(ctx: ContextDep) -> Iterator[Session]:
    """A database session per request (routes commit explicitly)."""
    session = ctx.sessions()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Allow:
    """Dependency that admits only the given roles (or everyone, for public routes).

    Resolves to the current :class:`User` (``None`` on public routes when anonymous) and
    stores the session row on ``request.state.web_session`` for templates (CSRF token).
    """

    def __init__(self, *roles: Role, public: bool = False, reason: str = "") -> None:
        if public and roles:
            raise ValueError("a public route allows everyone; give no roles")
        if not public and not roles:
            raise ValueError("name at least one role, or use Allow.public()")
        self.roles: frozenset[Role] | None = None if public else frozenset(roles)
        #: Why a route is public (required by the route test for routes outside the core
        #: login pages, e.g. a gateway callback authenticated by a signed URL instead).
        self.reason = reason

    @classmethod
    def public(cls, reason: str = "") -> Allow:
        return cls(public=True, reason=reason)

    def __repr__(self) -> str:
        names = "public" if self.roles is None else ",".join(sorted(r.value for r in self.roles))
        return f"Allow({names})"

    async def __call__(self, request: Request, db: SessionDep, ctx: ContextDep) -> User | None:
        user: User | None = None
        web_session: WebSession | None = None
        raw = request.cookies.get(SESSION_COOKIE)
        token = ctx.signer.unsign(raw) if raw else None
        if token:
            # a blocking database call: keep it off the event loop
            found = await run_in_threadpool(load_session, db, token)
            if found is not None:
                web_session, user = found
        request.state.user = user
        request.state.web_session = web_session
        if self.roles is not None:
            if user is None:
                raise LoginRequired()
            if user.role_enum not in self.roles:
                raise HTTPException(status_code=403,
                                    detail="your role may not use this page or endpoint")
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, ctx, web_session)
        return user


async def _check_csrf(request: Request, ctx: PlatformContext,
                      web_session: WebSession | None) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
    if web_session is not None:
        expected: str | None = web_session.csrf_token
    else:
        pre = request.cookies.get(PRE_SESSION_COOKIE)
        pre_token = ctx.signer.unsign(pre) if pre else None
        expected = ctx.signer.pre_session_csrf(pre_token) if pre_token else None
    if not tokens_equal(sent, expected):
        raise HTTPException(status_code=403, detail="missing or invalid CSRF token; reload the "
                            "page and submit the form again")


#: A database id in a path: positive and within 32 bits on every backend.
IdPath = Annotated[int, Path(ge=1, le=2_147_483_647)]

OwnerUser = Annotated[User, Depends(Allow(Role.OWNER))]
AdminUser = Annotated[User, Depends(Allow(Role.ADMIN))]
MerchantUser = Annotated[User, Depends(Allow(Role.MERCHANT))]
OperatorUser = Annotated[User, Depends(Allow(Role.OPERATOR))]
CentreUser = Annotated[User, Depends(Allow(Role.CENTRE))]
AnyUser = Annotated[User, Depends(Allow(*Role))]
ReleaseViewer = Annotated[User, Depends(Allow(Role.MERCHANT, Role.OPERATOR))]
PublicUser = Annotated[User | None, Depends(Allow.public())]
