"""The stored permission matrix: read it, change it within the guard rails (audited).

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.migrate import upgrade
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     m = matrix(s)
...     m == DEFAULT_MATRIX
True
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cipherseg.platform import audit
from cipherseg.platform.models import Role, RolePermission, User
from cipherseg.platform.permissions import DEFAULT_MATRIX, Permission, check_matrix


def matrix(db: Session) -> dict[Role, frozenset[Permission]]:
    """Role -> permissions, as stored (rows naming unknown roles or permissions ignored)."""
    roles = {r.value: r for r in Role}
    perms = {p.value: p for p in Permission}
    out: dict[Role, set[Permission]] = {r: set() for r in Role}
    for role, perm in db.execute(select(RolePermission.role, RolePermission.permission)):
        if role in roles and perm in perms:
            out[roles[role]].add(perms[perm])
    return {r: frozenset(p) for r, p in out.items()}


def save_matrix(db: Session, admin: User, new: Mapping[Role, Set[Permission]], *,
                ip: str | None = None) -> dict[str, list[str]]:
    """Replace the matrix with ``new`` (every role; guard rails checked first); returns and
    audits what changed. Commits."""
    wanted = {role: frozenset(new.get(role, frozenset())) for role in Role}
    check_matrix(wanted)
    old = matrix(db)
    added = sorted(f"{r.value}:{p.value}" for r in Role for p in wanted[r] - old[r])
    removed = sorted(f"{r.value}:{p.value}" for r in Role for p in old[r] - wanted[r])
    if not added and not removed:
        return {"granted": [], "revoked": []}
    for item in removed:
        role, perm = item.split(":")
        db.execute(delete(RolePermission).where(RolePermission.role == role,
                                                RolePermission.permission == perm))
    for item in added:
        role, perm = item.split(":")
        db.add(RolePermission(role=role, permission=perm))
    changes = {"granted": added, "revoked": removed}
    audit.record(db, audit.AuditAction.PERMISSION_CHANGE, actor=admin,
                 object_type="permissions", ip=ip, detail=changes)
    db.commit()
    return changes


def reset_to_defaults(db: Session, admin: User, *, ip: str | None = None) -> dict[str, list[str]]:
    """Put the default matrix back (audited like any edit)."""
    return save_matrix(db, admin, DEFAULT_MATRIX, ip=ip)
