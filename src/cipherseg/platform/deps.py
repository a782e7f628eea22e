"""Request dependencies: the platform context, the database session, and permission checks.

Every route declares the one permission it needs with :class:`Allow` (or that it is open to
every logged-in user, or public); the route test walks all routes of the app × all roles and
fails on any route without exactly one. ``Allow`` also checks the CSRF token of every
state-changing request (form field ``csrf_token`` or header ``X-CSRF-Token``).

>>> Allow(Permission.SEGMENT_RUN)
Allow(segment.run)
>>> Allow(Permission.SEGMENT_RUN).admits(Role.OWNER, frozenset({Permission.SEGMENT_RUN}))
True
>>> Allow(Permission.SEGMENT_RUN).admits(Role.MERCHANT, frozenset({Permission.SEGMENT_RUN}))
False
>>> Allow.public().public_route, Allow.signed_in().permission
(True, None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from cipherseg.pii.vault import PiiVault
from cipherseg.platform.core.config import Settings
from cipherseg.platform.models import ROLE_TITLES, Role, RolePermission, User, WebSession
from cipherseg.platform.permissions import PERMISSIONS, Permission, holds
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
    #: Called after a release grant is revoked with (context, session, job id, merchant):
    #: the extensions' ``on_revoke`` (campaigns: stop that merchant's queued sends).
    revocation_listeners: list[Callable[[PlatformContext, Session, int, User], None]] = field(
        default_factory=list)


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


class PasswordChangeRequired(Exception):
    """The user logged in with a temporary password: only changing it is allowed."""


def role_permissions(db: Session, role: Role) -> frozenset[Permission]:
    """The permissions ``role`` holds in the stored matrix (and is eligible for)."""
    stored = db.scalars(select(RolePermission.permission).where(RolePermission.role == role.value))
    known = {p.value: p for p in Permission}
    return frozenset(known[p] for p in stored
                     if p in known and holds(role, known[p], {known[p]}))


def _load(db: Session, token: str | None) -> tuple[WebSession | None, User | None,
                                                  frozenset[Permission]]:
    found = load_session(db, token) if token else None
    if found is None:
        return None, None, frozenset()
    web_session, user = found
    return web_session, user, role_permissions(db, user.role_enum)


class Allow:
    """The one dependency every route declares: who may call it.

    ``Allow(Permission.X)`` admits users whose role holds ``X`` in the permission matrix;
    :meth:`signed_in` admits every logged-in user (their own account, logout);
    :meth:`public` admits everyone (login page, gateway callbacks, with a ``reason``).
    Resolves to the current :class:`User` (``None`` on public routes when anonymous), stores
    the session row and the user's permissions on ``request.state`` (templates: CSRF token,
    navigation), refuses every route but the password change while a temporary password is
    in force, and checks the CSRF token of state-changing requests.
    """

    def __init__(self, permission: Permission | None = None, *, public: bool = False,
                 signed_in: bool = False, reason: str = "",
                 during_password_change: bool = False) -> None:
        if sum((permission is not None, public, signed_in)) != 1:
            raise ValueError("give exactly one of a permission, public=True or signed_in=True")
        self.permission = permission
        self.public_route = public
        #: Why a route is public (required by the route test for routes outside the core
        #: login pages, e.g. a gateway callback authenticated by a signed URL instead).
        self.reason = reason
        self.during_password_change = during_password_change

    @classmethod
    def public(cls, reason: str = "") -> Allow:
        return cls(public=True, reason=reason)

    @classmethod
    def signed_in(cls, *, during_password_change: bool = False) -> Allow:
        return cls(signed_in=True, during_password_change=during_password_change)

    def __repr__(self) -> str:
        what = ("public" if self.public_route else
                "signed in" if self.permission is None else self.permission.value)
        return f"Allow({what})"

    def admits(self, role: Role, granted: frozenset[Permission]) -> bool:
        """Whether a logged-in user of ``role`` holding ``granted`` may call the route."""
        return self.permission is None or holds(role, self.permission, granted)

    async def __call__(self, request: Request, db: SessionDep, ctx: ContextDep) -> User | None:
        raw = request.cookies.get(SESSION_COOKIE)
        token = ctx.signer.unsign(raw) if raw else None
        # blocking database calls: keep them off the event loop
        web_session, user, granted = await run_in_threadpool(_load, db, token)
        request.state.user = user
        request.state.web_session = web_session
        request.state.permissions = granted
        if not self.public_route:
            if user is None:
                raise LoginRequired()
            if user.must_change_password and not self.during_password_change:
                raise PasswordChangeRequired()
            if not self.admits(user.role_enum, granted):
                assert self.permission is not None
                raise HTTPException(status_code=403, detail=(
                    f"Your role ({ROLE_TITLES[user.role_enum]}) lacks the permission "
                    f"{self.permission.value} ({PERMISSIONS[self.permission].title.lower()}) "
                    "that this needs. An administrator can grant it on Permissions."))
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
#: The largest ``offset`` a paginated page accepts (bigger ones overflow SQLite's integer).
MAX_OFFSET = 1_000_000_000
#: A page's ``offset`` query parameter: 0 to :data:`MAX_OFFSET`, else 422 (never a 500).
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
#: A short text filter in a query string (a name, an id).
FilterQuery = Annotated[str | None, Query(max_length=200)]

# One alias per permission (routes: ``user: SegmentRunner``).
DataUploader = Annotated[User, Depends(Allow(Permission.DATA_UPLOAD))]
CustomerReader = Annotated[User, Depends(Allow(Permission.CUSTOMERS_READ))]
CustomerEraser = Annotated[User, Depends(Allow(Permission.CUSTOMERS_ERASE))]
SegmentRunner = Annotated[User, Depends(Allow(Permission.SEGMENT_RUN))]
SegmentReleaser = Annotated[User, Depends(Allow(Permission.SEGMENT_RELEASE))]
JointRunner = Annotated[User, Depends(Allow(Permission.JOINT_RUN))]
RequestDecider = Annotated[User, Depends(Allow(Permission.REQUEST_DECIDE))]
ReleaseViewer = Annotated[User, Depends(Allow(Permission.RELEASE_VIEW))]
RequestCreator = Annotated[User, Depends(Allow(Permission.REQUEST_CREATE))]
CampaignCreator = Annotated[User, Depends(Allow(Permission.CAMPAIGN_CREATE))]
AudienceViewer = Annotated[User, Depends(Allow(Permission.AUDIENCE_VIEW))]
CampaignApprover = Annotated[User, Depends(Allow(Permission.CAMPAIGN_APPROVE))]
OptOutManager = Annotated[User, Depends(Allow(Permission.OPTOUT_LIFT))]
CentreScheduleViewer = Annotated[User, Depends(Allow(Permission.CENTRE_SCHEDULE))]
AuditReader = Annotated[User, Depends(Allow(Permission.AUDIT_READ))]
UserManager = Annotated[User, Depends(Allow(Permission.USERS_MANAGE))]
AnyUser = Annotated[User, Depends(Allow.signed_in())]
#: A logged-in user, also while a temporary password must be changed.
AnyUserChangingPassword = Annotated[User, Depends(Allow.signed_in(during_password_change=True))]
PublicUser = Annotated[User | None, Depends(Allow.public())]
