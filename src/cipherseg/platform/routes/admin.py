"""Administrator pages: users (create, disable, change role, reset a password), the
permission matrix, and the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import select

from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AuditReader,
    ContextDep,
    FilterQuery,
    IdPath,
    OffsetQuery,
    SessionDep,
    UserManager,
    client_ip,
)
from cipherseg.platform.models import Role, User
from cipherseg.platform.permissions import PERMISSIONS, Permission
from cipherseg.platform.routes.common import redirect, render
from cipherseg.platform.security import clear_login_failures, recent_failures
from cipherseg.platform.services import permissions as matrix_service
from cipherseg.platform.services.users import (
    create_user,
    parse_role,
    reset_password,
    update_user,
)

router = APIRouter(prefix="/admin", include_in_schema=False)


def _users_page(request: Request, ctx: ContextDep, db: SessionDep, *, status_code: int = 200,
                error: str | None = None, form: dict[str, str] | None = None) -> Response:
    users = list(db.scalars(select(User).order_by(User.username)))
    s = ctx.settings
    failures = recent_failures(db, s.login_window_minutes)
    return render(request, ctx, "admin_users.html", status_code=status_code, users=users,
                  roles=list(Role), error=error, form=form or {}, failures=failures,
                  window=s.login_window_minutes)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, ctx: ContextDep, db: SessionDep,
               _admin: UserManager) -> Response:
    """List users with forms to change them."""
    return _users_page(request, ctx, db)


@router.post("/users", response_class=HTMLResponse)
def users_create(request: Request, ctx: ContextDep, db: SessionDep, admin: UserManager,
                 username: Annotated[str, Form(max_length=200)] = "",
                 password: Annotated[str, Form(max_length=1024)] = "",
                 role: Annotated[str, Form(max_length=32)] = "") -> Response:
    """Create a user (the role must be chosen: there is no default)."""
    try:
        if not role:
            raise ValidationError("choose the new user's role")
        new = create_user(db, username.strip(), password, parse_role(role))
    except ValidationError as exc:
        db.rollback()
        return _users_page(request, ctx, db, status_code=400,
                           error=f"User not created: {exc}.",
                           form={"username": username[:64], "role": role[:16]})
    audit.record(db, "user_create", actor=admin, object_type="user", object_id=new.username,
                 ip=client_ip(request), detail={"role": new.role})
    db.commit()
    return redirect("/admin/users?done=user_created")


@router.post("/users/{user_id}", response_class=HTMLResponse)
def users_update(request: Request, ctx: ContextDep, db: SessionDep, admin: UserManager,
                 user_id: IdPath, role: Annotated[str, Form(max_length=32)] = "",
                 active: Annotated[str, Form(max_length=8)] = "1") -> Response:
    """Change a user's role or disable/enable them (their sessions end)."""
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, "no such user")
    try:
        new_role = parse_role(role) if role else None
        new_active = active not in ("0", "false", "no", "")
        if target.id == admin.id and (new_active is False or
                                      (new_role is not None and new_role != Role.ADMIN)):
            raise ValidationError("you cannot disable yourself or drop your own admin role; "
                                  "ask another administrator")
        changes = update_user(db, target, role=new_role, active=new_active)
    except ValidationError as exc:
        db.rollback()
        return _users_page(request, ctx, db, status_code=400, error=str(exc))
    if not changes:
        return redirect("/admin/users?done=user_unchanged")
    audit.record(db, "user_update", actor=admin, object_type="user", object_id=target.username,
                 ip=client_ip(request), detail=changes)
    db.commit()
    return redirect("/admin/users?done=user_updated")


@router.post("/users/{user_id}/reset-password", response_class=HTMLResponse)
def users_reset_password(request: Request, ctx: ContextDep, db: SessionDep,
                         admin: UserManager, user_id: IdPath) -> Response:
    """Give a user a one-time temporary password (shown once, on this response only)."""
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, "no such user")
    if target.id == admin.id:
        return _users_page(request, ctx, db, status_code=400,
                           error="Change your own password on Your account instead.")
    password, expires = reset_password(db, target, hours=ctx.settings.temp_password_hours)
    audit.record(db, "password_reset", actor=admin, object_type="user",
                 object_id=target.username, ip=client_ip(request),
                 detail={"expires": expires.isoformat(timespec="minutes")})
    db.commit()
    return render(request, ctx, "admin_reset.html", target=target, password=password,
                  expires=expires, hours=ctx.settings.temp_password_hours)


@router.post("/users/{user_id}/unlock", response_class=HTMLResponse)
def users_unlock(request: Request, ctx: ContextDep, db: SessionDep, admin: UserManager,
                 user_id: IdPath) -> Response:
    """Forget a user's failed logins (from every address), so the login throttle lets them
    in again; audited."""
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, "no such user")
    forgotten = clear_login_failures(db, target.username)
    audit.record(db, "login_unlock", actor=admin, object_type="user",
                 object_id=target.username, ip=client_ip(request),
                 detail={"failures_forgotten": forgotten})
    db.commit()
    return redirect("/admin/users?done=user_unlocked")


# ------------------------------------------------------------------------------ permissions
def _permissions_page(request: Request, ctx: ContextDep, db: SessionDep, *,
                      status_code: int = 200, error: str | None = None) -> Response:
    return render(request, ctx, "admin_permissions.html", status_code=status_code,
                  error=error, matrix=matrix_service.matrix(db), roles=list(Role),
                  permissions=list(PERMISSIONS.items()))


@router.get("/permissions", response_class=HTMLResponse)
def permissions_page(request: Request, ctx: ContextDep, db: SessionDep,
                     _admin: UserManager) -> Response:
    """The permission matrix: which role holds which permission."""
    return _permissions_page(request, ctx, db)


@router.post("/permissions", response_class=HTMLResponse)
def permissions_save(request: Request, ctx: ContextDep, db: SessionDep, admin: UserManager,
                     grant: Annotated[list[str] | None, Form(max_length=48)] = None,
                     defaults: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Save the matrix (``grant`` = ``role:permission`` of every ticked box)."""
    try:
        if defaults == "yes":
            matrix_service.reset_to_defaults(db, admin, ip=client_ip(request))
        else:
            matrix_service.save_matrix(db, admin, _parse_grants(grant or []),
                                       ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _permissions_page(request, ctx, db, status_code=400,
                                 error=f"Nothing was saved: {exc}.")
    return redirect("/admin/permissions?done=permissions_saved")


def _parse_grants(values: list[str]) -> dict[Role, set[Permission]]:
    roles = {r.value: r for r in Role}
    perms = {p.value: p for p in Permission}
    out: dict[Role, set[Permission]] = {r: set() for r in Role}
    for value in values:
        role, _, perm = value.partition(":")
        if role not in roles or perm not in perms:
            raise ValidationError(f"unknown role or permission {value[:48]!r}")
        out[roles[role]].add(perms[perm])
    return out


# ------------------------------------------------------------------------------ audit
@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, ctx: ContextDep, db: SessionDep, _reader: AuditReader,
               action: FilterQuery = None, actor: FilterQuery = None,
               offset: OffsetQuery = 0) -> Response:
    """Browse the audit log, newest first."""
    limit = 100
    events = audit.list_events(db, limit=limit, offset=offset, action=action or None,
                               actor=actor or None)
    return render(request, ctx, "admin_audit.html", events=events,
                  action_groups=audit.action_groups(db), action=action, actor=actor,
                  offset=offset, limit=limit)


@router.get("/audit.csv")
def audit_csv(request: Request, ctx: ContextDep, db: SessionDep, reader: AuditReader) -> Response:
    """The whole audit log as CSV (the export itself is audited first)."""
    audit.record(db, "export", actor=reader, object_type="audit_log", ip=client_ip(request))
    db.commit()
    export_db = ctx.sessions()

    def body() -> Iterator[str]:
        try:
            yield from audit.iter_csv(export_db)
        finally:
            export_db.close()

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="cipherseg-audit.csv"'})
