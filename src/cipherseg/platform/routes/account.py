"""The user's own account: what their role may do, and changing their password (also the
forced change after an administrator's reset)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AnyUser,
    AnyUserChangingPassword,
    ContextDep,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import User
from cipherseg.platform.permissions import PERMISSIONS
from cipherseg.platform.routes.auth import PASSWORD_PAGE, set_session_cookie
from cipherseg.platform.routes.common import home_for, redirect, render
from cipherseg.platform.security import MIN_PASSWORD_CHARS, open_session
from cipherseg.platform.services.users import change_password

router = APIRouter(include_in_schema=False)


def _page(request: Request, ctx: ContextDep, user: User, *, status_code: int = 200,
          error: str | None = None) -> Response:
    granted = request.state.permissions
    return render(request, ctx, "account.html", status_code=status_code, error=error,
                  forced=user.must_change_password, min_chars=MIN_PASSWORD_CHARS,
                  granted=[(p, info) for p, info in PERMISSIONS.items() if p in granted])


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, ctx: ContextDep, user: AnyUser) -> Response:
    """The account: role, permissions, password change."""
    return _page(request, ctx, user)


@router.get(PASSWORD_PAGE, response_class=HTMLResponse)
def password_page(request: Request, ctx: ContextDep,
                  user: AnyUserChangingPassword) -> Response:
    """The password form (the only page while a temporary password is in force)."""
    if not user.must_change_password:
        return redirect("/account")
    return _page(request, ctx, user)


@router.post(PASSWORD_PAGE, response_class=HTMLResponse)
def password_change(request: Request, ctx: ContextDep, db: SessionDep,
                    user: AnyUserChangingPassword,
                    current: Annotated[str, Form(max_length=1024)] = "",
                    new: Annotated[str, Form(max_length=1024)] = "",
                    confirm: Annotated[str, Form(max_length=1024)] = "") -> Response:
    """Change one's own password; every other session of the user ends, this one goes on."""
    forced = user.must_change_password
    try:
        change_password(db, user, new, current=current or None, confirm=confirm)
    except ValidationError as exc:
        db.rollback()
        return _page(request, ctx, user, status_code=400, error=f"Not changed: {exc}.")
    audit.record(db, "password_change", actor=user, ip=client_ip(request),
                 detail={"after_reset": forced})
    token = open_session(db, user, ctx.settings.session_hours)[0]
    db.commit()
    target = home_for(request.state.permissions) if forced else "/account"
    response = redirect(f"{target}?done=password_changed")
    set_session_cookie(request, ctx, response, token)
    return response
