"""Administrator pages: users (create, disable, change role) and the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import select

from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import AdminUser, ContextDep, IdPath, SessionDep, client_ip
from cipherseg.platform.models import Role, User
from cipherseg.platform.routes.common import redirect, render
from cipherseg.platform.users import create_user, parse_role, update_user

router = APIRouter(prefix="/admin", include_in_schema=False)


def _users_page(request: Request, ctx: ContextDep, db: SessionDep, *, status_code: int = 200,
                error: str | None = None) -> Response:
    users = list(db.scalars(select(User).order_by(User.username)))
    return render(request, ctx, "admin_users.html", status_code=status_code, users=users,
                  roles=list(Role), error=error)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, ctx: ContextDep, db: SessionDep, _admin: AdminUser) -> Response:
    """List users with forms to change them."""
    return _users_page(request, ctx, db)


@router.post("/users", response_class=HTMLResponse)
def users_create(request: Request, ctx: ContextDep, db: SessionDep, admin: AdminUser,
                 username: Annotated[str, Form(max_length=200)] = "",
                 password: Annotated[str, Form(max_length=1024)] = "",
                 role: Annotated[str, Form(max_length=32)] = "") -> Response:
    """Create a user."""
    try:
        new = create_user(db, username.strip(), password, parse_role(role))
    except ValidationError as exc:
        db.rollback()
        return _users_page(request, ctx, db, status_code=400, error=str(exc))
    audit.record(db, "user_create", actor=admin, object_type="user", object_id=new.username,
                 ip=client_ip(request), detail={"role": new.role})
    db.commit()
    return redirect("/admin/users?done=user_created")


@router.post("/users/{user_id}", response_class=HTMLResponse)
def users_update(request: Request, ctx: ContextDep, db: SessionDep, admin: AdminUser,
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


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, ctx: ContextDep, db: SessionDep, _admin: AdminUser,
               action: str | None = None, actor: str | None = None, offset: int = 0) -> Response:
    """Browse the audit log, newest first."""
    limit = 100
    offset = max(0, offset)
    events = audit.list_events(db, limit=limit, offset=offset, action=action or None,
                               actor=actor or None)
    return render(request, ctx, "admin_audit.html", events=events, actions=audit.ACTIONS,
                  action=action, actor=actor, offset=offset, limit=limit)


@router.get("/audit.csv")
def audit_csv(request: Request, ctx: ContextDep, db: SessionDep, admin: AdminUser) -> Response:
    """The whole audit log as CSV (the export itself is audited first)."""
    audit.record(db, "export", actor=admin, object_type="audit_log", ip=client_ip(request))
    db.commit()
    export_db = ctx.sessions()

    def body() -> Iterator[str]:
        try:
            yield from audit.iter_csv(export_db)
        finally:
            export_db.close()

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="cipherseg-audit.csv"'})
