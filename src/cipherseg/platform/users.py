"""Accounts: create, change role, disable (users are never deleted: the audit log names them).

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.migrate import upgrade
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     u = create_user(s, "alice", "a long passphrase", Role.OWNER)
...     (u.username, u.role, u.active)
('alice', 'owner', True)
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.errors import ValidationError
from cipherseg.platform.models import Role, User
from cipherseg.platform.security import close_user_sessions, hash_password, validate_password

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")


def parse_role(value: str) -> Role:
    """A :class:`Role` from its name, with a clear error listing the valid ones."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValidationError(f"unknown role {value!r}; choose one of "
                              f"{', '.join(r.value for r in Role)}") from None


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    """Add an active user (flushes; the caller commits)."""
    if not USERNAME_RE.match(username):
        raise ValidationError("user names are 2-64 characters: letters, digits, _ . @ -")
    validate_password(password)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationError(f"user {username!r} already exists; choose another name")
    user = User(username=username, password_hash=hash_password(password), role=role.value,
                active=True)
    session.add(user)
    session.flush()
    return user


def update_user(session: Session, user: User, *, role: Role | None = None,
                active: bool | None = None, password: str | None = None) -> dict[str, str]:
    """Apply changes; returns what changed (for the audit log). Sessions end on change."""
    changes: dict[str, str] = {}
    if role is not None and role.value != user.role:
        changes["role"] = f"{user.role}->{role.value}"
        user.role = role.value
    if active is not None and active != user.active:
        changes["active"] = f"{user.active}->{active}"
        user.active = active
    if password is not None:
        validate_password(password)
        user.password_hash = hash_password(password)
        changes["password"] = "changed"
    if changes:
        session.flush()
        close_user_sessions(session, user.id)
    return changes
