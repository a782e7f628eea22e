"""Login, logout, the start page and the health check."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AnyUserChangingPassword,
    ContextDep,
    PublicUser,
    SessionDep,
    client_ip,
    role_permissions,
)
from cipherseg.platform.routes.common import home_for, redirect, render, safe_next
from cipherseg.platform.security import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    check_login,
    clear_login_failures,
    close_session,
    login_throttled,
    new_token,
    open_session,
    record_login_failure,
)
from cipherseg.platform.services.users import (
    consume_temporary_password,
    temporary_password_expired,
)

#: Where a user with a temporary password must go first.
PASSWORD_PAGE = "/account/password"

router = APIRouter(include_in_schema=False)


def _secure(request: Request, force: bool) -> bool:
    return force or request.url.scheme == "https"


@router.get("/healthz")
def healthz(_user: PublicUser) -> PlainTextResponse:
    """Liveness probe (no data)."""
    return PlainTextResponse("ok")


@router.get("/")
def start(request: Request, user: PublicUser) -> RedirectResponse:
    """Send each role to its home page; anonymous visitors to the login page."""
    if user is None:
        return redirect("/login")
    if user.must_change_password:
        return redirect(PASSWORD_PAGE)
    return redirect(home_for(request.state.permissions))


def _login_page(request: Request, ctx: ContextDep, *, status_code: int = 200,
                error: str | None = None, username: str = "", next_url: str = "") -> Response:
    pre_raw = request.cookies.get(PRE_SESSION_COOKIE)
    pre = ctx.signer.unsign(pre_raw) if pre_raw else None
    fresh = pre is None
    if pre is None:
        pre = new_token()
    response = render(request, ctx, "login.html", status_code=status_code, error=error,
                      username=username, next_url=next_url,
                      login_csrf=ctx.signer.pre_session_csrf(pre))
    if fresh:
        response.set_cookie(PRE_SESSION_COOKIE, ctx.signer.sign(pre), httponly=True,
                            samesite="lax", secure=_secure(request, ctx.settings.cookie_secure))
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, ctx: ContextDep, user: PublicUser,
               next: str | None = None) -> Response:
    """The login page (already logged-in users go to their home page)."""
    if user is not None:
        return redirect(PASSWORD_PAGE if user.must_change_password
                        else home_for(request.state.permissions))
    return _login_page(request, ctx, next_url=safe_next(next) or "")


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, ctx: ContextDep, db: SessionDep, _user: PublicUser,
          username: Annotated[str, Form(max_length=200)] = "",
          password: Annotated[str, Form(max_length=1024)] = "",
          next: Annotated[str, Form(max_length=500)] = "") -> Response:
    """Check credentials (throttled), open a session, set the cookie."""
    ip = client_ip(request)
    username = username.strip()[:64]
    s = ctx.settings
    if login_throttled(db, username, ip, max_failures=s.login_max_failures,
                       window_minutes=s.login_window_minutes,
                       user_max_failures=s.login_user_max_failures):
        audit.record(db, "login_throttled", actor=None, actor_name=username, ip=ip)
        db.commit()
        return _login_page(request, ctx, status_code=429, username=username,
                           error=f"Too many failed attempts. Wait {s.login_window_minutes:g} "
                                 "minutes and try again, or ask an administrator to unlock "
                                 "your account.")
    user = check_login(db, username, password)
    if user is None:
        record_login_failure(db, username, ip)
        audit.record(db, "login_failed", actor=None, actor_name=username, ip=ip)
        db.commit()
        return _login_page(request, ctx, status_code=400, username=username,
                           error="Wrong user name or password (or the account is disabled).",
                           next_url=safe_next(next) or "")
    if temporary_password_expired(user):
        audit.record(db, "login_failed", actor=None, actor_name=username, ip=ip,
                     detail={"reason": "temporary password expired"})
        db.commit()
        return _login_page(request, ctx, status_code=400, username=username,
                           error="Your temporary password has expired. Ask an administrator "
                                 "to reset your password again.")
    clear_login_failures(db, username)
    forced = user.must_change_password
    consume_temporary_password(user)
    token = open_session(db, user, s.session_hours)[0]
    audit.record(db, "login", actor=user, ip=ip,
                 detail={"temporary_password": True} if forced else None)
    db.commit()
    target = (PASSWORD_PAGE if forced else
              safe_next(next) or home_for(role_permissions(db, user.role_enum)))
    response = redirect(target)
    set_session_cookie(request, ctx, response, token)
    response.delete_cookie(PRE_SESSION_COOKIE)
    return response


def set_session_cookie(request: Request, ctx: ContextDep, response: Response,
                       token: str) -> None:
    """Give the browser the signed cookie of the session ``token``."""
    s = ctx.settings
    response.set_cookie(SESSION_COOKIE, ctx.signer.sign(token), httponly=True, samesite="lax",
                        secure=_secure(request, s.cookie_secure),
                        max_age=int(s.session_hours * 3600))


@router.post("/logout")
def logout(request: Request, ctx: ContextDep, db: SessionDep,
           user: AnyUserChangingPassword) -> Response:
    """End the session."""
    raw = request.cookies.get(SESSION_COOKIE)
    token = ctx.signer.unsign(raw) if raw else None
    if token:
        close_session(db, token)
    audit.record(db, "logout", actor=user, ip=client_ip(request))
    db.commit()
    response = redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response
