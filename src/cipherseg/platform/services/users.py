"""Accounts: create, change role, disable (users are never deleted: the audit log names them);
passwords: change one's own, an administrator's reset to a one-time temporary password, and
the forced change that follows it.

A temporary password works for **one** login within ``temp_password_hours``: that login
consumes it (the stored hash becomes unusable) and opens a session that can only change the
password; if that session ends first, the administrator resets again.

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
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform.models import Role, User
from cipherseg.platform.security import (
    close_user_sessions,
    hash_password,
    validate_password,
    verify_password,
)

#: Letters and digits that cannot be mistaken for each other when read aloud or copied.
_TEMP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
#: What the stored hash becomes once a temporary password has been used (matches nothing).
CONSUMED = "!temporary password used"

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
_USERNAME_CHAR = re.compile(r"[A-Za-z0-9_.@-]")


def parse_role(value: str) -> Role:
    """A :class:`Role` from its name, with a clear error listing the valid ones."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValidationError(f"unknown role {value!r}; choose one of "
                              f"{', '.join(r.value for r in Role)}") from None


def check_username(username: str) -> None:
    """Refuse a user name outside the rules, saying which rule."""
    if not 2 <= len(username) <= 64:
        raise ValidationError(f"the user name must have 2 to 64 characters (it has "
                              f"{len(username)})")
    bad = sorted({c for c in username if not _USERNAME_CHAR.fullmatch(c)})
    if bad:
        shown = ", ".join("a space" if c == " " else f"“{c}”" for c in bad[:5])
        raise ValidationError(f"the user name may contain only letters, digits and _ . @ - "
                              f"(it contains {shown})")


def create_user(session: Session, username: str, password: str, role: Role) -> User:
    """Add an active user (flushes; the caller commits)."""
    check_username(username)
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


def get_user(session: Session, username: str) -> User | None:
    """The user called ``username``, if any."""
    return session.scalar(select(User).where(User.username == username))


def change_password(session: Session, user: User, new: str, *, current: str | None,
                    confirm: str | None = None) -> None:
    """The user changes their own password (flushes; ends every session of theirs).

    ``current`` is required unless a temporary password is in force (the login that just
    consumed it proved it). ``confirm``, when given, must repeat ``new``.
    """
    if not user.must_change_password:
        if not current:
            raise ValidationError("enter your current password")
        if not verify_password(user.password_hash, current):
            raise ValidationError("the current password is wrong")
    if confirm is not None and confirm != new:
        raise ValidationError("the new password and its confirmation differ")
    validate_password(new)
    if current and new == current:
        raise ValidationError("choose a new password different from the current one")
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_expires_at = None
    session.flush()
    close_user_sessions(session, user.id)


def temporary_password() -> str:
    """A random one-time password: 4 groups of 4 unambiguous characters (~78 bits)."""
    chars = "".join(secrets.choice(_TEMP_ALPHABET) for _ in range(16))
    return "-".join(chars[i:i + 4] for i in range(0, 16, 4))


def reset_password(session: Session, user: User, *, hours: float) -> tuple[str, datetime]:
    """An administrator's reset: a one-time temporary password valid for ``hours`` that
    must be changed at the next login; the user's sessions end (flushes). Returns the
    password (shown once, never stored in clear) and its expiry."""
    password = temporary_password()
    expires = utcnow() + timedelta(hours=hours)
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.password_expires_at = expires
    session.flush()
    close_user_sessions(session, user.id)
    return password, expires


def set_password(session: Session, user: User, password: str) -> None:
    """Set a permanent password (command line; flushes; ends the user's sessions)."""
    validate_password(password)
    user.password_hash = hash_password(password)
    user.must_change_password = False
    user.password_expires_at = None
    session.flush()
    close_user_sessions(session, user.id)


def consume_temporary_password(user: User) -> None:
    """A login with a temporary password used it up: it will not open another session."""
    if user.must_change_password:
        user.password_hash = CONSUMED


def temporary_password_expired(user: User) -> bool:
    """Whether the user's temporary password is past its expiry."""
    return (user.must_change_password and user.password_expires_at is not None
            and user.password_expires_at <= utcnow())
