"""Passwords (Argon2id), session tokens, CSRF tokens and login throttling.

The session cookie carries a random 256-bit token signed with the session key; the database
keeps only its SHA-256, so a database dump opens no session. Each session has its own CSRF
token; forms of anonymous pages (login) use a token bound to a pre-session cookie.

>>> h = hash_password("correct horse battery staple")
>>> h.startswith("$argon2id$") and verify_password(h, "correct horse battery staple")
True
>>> verify_password(h, "wrong")
False
>>> signer = TokenSigner("k" * 48)
>>> token = new_token()
>>> signer.unsign(signer.sign(token)) == token
True
>>> signer.unsign("tampered") is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform.models import LoginFailure, User, WebSession

_HASHER = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile defaults
MIN_PASSWORD_CHARS = 10
SESSION_COOKIE = "cipherseg_session"
PRE_SESSION_COOKIE = "cipherseg_pre"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def hash_password(password: str) -> str:
    """Argon2id hash of ``password``."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash`` (constant-time inside argon2)."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


#: A real hash to verify against when the user does not exist (equalises timing).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def check_login(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or ``None`` (same work either way)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password) or not user.active:
        return None
    return user


def validate_password(password: str) -> None:
    """Refuse passwords too short to resist guessing."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValidationError(f"the password must have at least {MIN_PASSWORD_CHARS} "
                              "characters; use a passphrase")


def new_token() -> str:
    """A random URL-safe token (256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """SHA-256 hex of a token (what the database stores)."""
    return hashlib.sha256(token.encode("ascii", errors="replace")).hexdigest()


class TokenSigner:
    """Signs cookie values with the session key (itsdangerous)."""

    def __init__(self, secret: str) -> None:
        self._s = URLSafeSerializer(secret, salt="cipherseg-session")
        self._csrf_key = hashlib.sha256(b"cipherseg-csrf/" + secret.encode()).digest()

    def sign(self, token: str) -> str:
        return self._s.dumps(token)

    def unsign(self, value: str) -> str | None:
        try:
            token = self._s.loads(value)
        except BadSignature:
            return None
        return token if isinstance(token, str) else None

    def pre_session_csrf(self, pre_token: str) -> str:
        """The CSRF token for anonymous forms, bound to the pre-session cookie."""
        return hmac.new(self._csrf_key, pre_token.encode(), hashlib.sha256).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison that treats missing tokens as unequal."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


def open_session(session: Session, user: User, hours: float) -> tuple[str, WebSession]:
    """Create a login session; returns the raw token (for the cookie) and the row."""
    token = new_token()
    row = WebSession(id=token_digest(token), user_id=user.id, csrf_token=new_token(),
                     expires_at=utcnow() + timedelta(hours=hours))
    session.add(row)
    return token, row


def load_session(session: Session, token: str) -> tuple[WebSession, User] | None:
    """The live session and its active user for a raw token, or ``None``."""
    row = session.get(WebSession, token_digest(token))
    if row is None or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return row, user


def close_session(session: Session, token: str) -> None:
    """Delete a login session (logout)."""
    session.execute(delete(WebSession).where(WebSession.id == token_digest(token)))


def close_user_sessions(session: Session, user_id: int) -> None:
    """Log a user out everywhere (after disabling or a role change)."""
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))


def login_throttled(session: Session, username: str, ip: str, *, max_failures: int,
                    window_minutes: float, user_max_failures: int | None = None) -> bool:
    """Whether recent failures block a login: ``max_failures`` of this user name from this
    address, or ``user_max_failures`` (default 4 × ``max_failures``) of this user name from
    every address together. Failures of other user names from the same address never block
    (one proxy or office address would otherwise lock everyone out)."""
    since = utcnow() - timedelta(minutes=window_minutes)
    recent = select(func.count()).select_from(LoginFailure).where(
        LoginFailure.username == username, LoginFailure.at >= since)
    by_pair = session.scalar(recent.where(LoginFailure.ip == ip)) or 0
    if by_pair >= max_failures:
        return True
    by_user = session.scalar(recent) or 0
    return by_user >= (user_max_failures or 4 * max_failures)


def recent_failures(session: Session, window_minutes: float) -> dict[str, int]:
    """Failed logins per user name within the window (the administrators' users page)."""
    since = utcnow() - timedelta(minutes=window_minutes)
    rows = session.execute(select(LoginFailure.username, func.count())
                           .where(LoginFailure.at >= since).group_by(LoginFailure.username))
    return {name: int(n) for name, n in rows}


def record_login_failure(session: Session, username: str, ip: str) -> None:
    """Remember a failed login (for throttling)."""
    session.add(LoginFailure(username=username[:64], ip=ip[:64]))


def clear_login_failures(session: Session, username: str, before: datetime | None = None) -> int:
    """Forget a username's failures (a successful login, an administrator's unlock);
    returns how many were forgotten."""
    stmt = delete(LoginFailure).where(LoginFailure.username == username)
    if before is not None:
        stmt = stmt.where(LoginFailure.at < before)
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
