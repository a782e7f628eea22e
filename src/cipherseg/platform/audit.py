"""The append-only audit log: record events, list them, export them as CSV.

Events never carry personal data: customers appear by pseudonym or row id, phone numbers
never (details pass through :func:`cipherseg.pii.redact_phones` as a second line of defence).

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.migrate import upgrade
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     _ = record(s, "login", actor=None, actor_name="alice", ip="127.0.0.1")
...     s.commit()
...     [e.action for e in list_events(s)]
['login']
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.pii.masking import redact_phones
from cipherseg.platform import csv_export
from cipherseg.platform.models import AuditEvent, User


class AuditAction(enum.StrEnum):
    """Every action the platform can record: :func:`record` refuses any other, so the
    audit log's filter (:func:`action_groups`) lists exactly what the code can record."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGIN_THROTTLED = "login_throttled"
    LOGIN_UNLOCK = "login_unlock"
    LOGOUT = "logout"
    USER_CREATE = "user_create"
    USER_UPDATE = "user_update"
    PASSWORD_CHANGE = "password_change"
    PASSWORD_RESET = "password_reset"
    PASSWORD_SET = "password_set"
    PERMISSION_CHANGE = "permission_change"
    UPLOAD = "upload"
    UPLOAD_IMPORTED = "upload_imported"
    UPLOAD_REJECTED = "upload_rejected"
    UPLOAD_FAILED = "upload_failed"
    ERASURE = "erasure"
    EXPORT = "export"
    RESULT_VIEW = "result_view"
    JOB_START = "job_start"
    JOB_FINISH = "job_finish"
    JOB_FAILED = "job_failed"
    JOINT_CREATE = "joint_create"
    JOINT_ACCEPT = "joint_accept"
    JOINT_START = "joint_start"
    JOINT_FINISH = "joint_finish"
    RELEASE_GRANT = "release_grant"
    RELEASE_REVOKE = "release_revoke"
    REQUEST_CREATE = "request_create"
    REQUEST_APPROVE = "request_approve"
    REQUEST_DECLINE = "request_decline"
    REQUEST_WITHDRAW = "request_withdraw"
    CAMPAIGN_CREATE = "campaign_create"
    CAMPAIGN_SUBMIT = "campaign_submit"
    CAMPAIGN_SEND = "campaign_send"
    CAMPAIGN_APPROVE = "campaign_approve"
    CAMPAIGN_PAUSE = "campaign_pause"
    CAMPAIGN_RESUME = "campaign_resume"
    CAMPAIGN_CANCEL = "campaign_cancel"
    CAMPAIGN_STOPPED = "campaign_stopped"
    CAMPAIGN_RETRY = "campaign_retry"
    CAMPAIGN_GATEWAY_TEST = "campaign_gateway_test"
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    OPT_OUT_ADDED = "opt_out_added"
    OPT_OUT_REMOVED = "opt_out_removed"
    SUPPRESSION_ADDED = "suppression_added"
    SUPPRESSION_REMOVED = "suppression_removed"
    PII_ROTATE_KEY = "pii_rotate_key"


#: The filter's groups: an action belongs to the first group whose prefix it starts with.
_GROUPS = (
    ("Sign-in", ("login", "logout")),
    ("Accounts and permissions", ("user_", "password_", "permission_")),
    ("Data", ("upload", "erasure", "export", "pii_")),
    ("Segmentation", ("job_", "joint_", "result_")),
    ("Releases and requests", ("release_", "request_")),
    ("Campaigns and opt-outs", ("campaign_", "opt_out", "suppression_")),
)

#: Every action, for scripts (the same set :func:`record` accepts).
ACTIONS = tuple(a.value for a in AuditAction)
CSV_COLUMNS = ("id", "at", "actor", "role", "action", "object_type", "object_id", "ip",
               "detail")


def action_groups(session: Session | None = None) -> list[tuple[str, list[str]]]:
    """The audit filter's choices: every recordable action by area, then (with a
    ``session``) actions that older versions recorded and the log still holds."""
    groups: list[tuple[str, list[str]]] = []
    placed: set[str] = set()
    for title, prefixes in _GROUPS:
        members = [a.value for a in AuditAction
                   if a.value not in placed and a.value.startswith(prefixes)]
        placed.update(members)
        groups.append((title, members))
    rest = [a.value for a in AuditAction if a.value not in placed]
    if rest:
        groups.append(("Other", rest))
    if session is not None:
        older = sorted(set(session.scalars(select(AuditEvent.action).distinct()))
                       - set(ACTIONS))
        if older:
            groups.append(("Recorded by older versions", older))
    return groups


def record(session: Session, action: AuditAction | str, *, actor: User | None,
           actor_name: str | None = None, object_type: str | None = None,
           object_id: str | int | None = None, ip: str | None = None,
           detail: dict[str, Any] | None = None, region: str = "CN") -> AuditEvent:
    """Add an event to ``session`` (committed with the caller's transaction).

    ``action`` must be an :class:`AuditAction` (or its value): a new kind of event is added
    there first, so the audit log's filter offers it.
    """
    try:
        action = AuditAction(action)
    except ValueError:
        raise ValueError(f"unknown audit action {action!r}: add it to "
                         "cipherseg.platform.audit.AuditAction") from None
    if detail is not None:
        detail = json.loads(redact_phones(json.dumps(detail, default=str), region=region))
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        actor_name=(actor.username if actor else (actor_name or "system"))[:64],
        actor_role=actor.role if actor else None,
        action=action.value,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id)[:64],
        ip=(ip or None) and ip[:64],
        detail=detail,
    )
    session.add(event)
    return event


def list_events(session: Session, *, limit: int = 100, offset: int = 0,
                action: str | None = None, actor: str | None = None) -> list[AuditEvent]:
    """Newest first, optionally filtered by action or actor name."""
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if actor:
        stmt = stmt.where(AuditEvent.actor_name == actor)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def _csv_rows(session: Session, batch: int) -> Iterator[list[Any]]:
    yield list(CSV_COLUMNS)
    last = 0
    while True:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.id > last)
                                    .order_by(AuditEvent.id).limit(batch)))
        for e in rows:
            yield [e.id, e.at.isoformat(), e.actor_name, e.actor_role or "", e.action,
                   e.object_type or "", e.object_id or "", e.ip or "",
                   json.dumps(e.detail, sort_keys=True) if e.detail else ""]
        if len(rows) < batch:
            return
        last = rows[-1].id


def iter_csv(session: Session, *, batch: int = 1000) -> Iterator[str]:
    """The whole log as CSV text chunks (oldest first), streamed in batches; cells that a
    spreadsheet would run as formulas (a user name typed at the login form) neutralised."""
    yield from csv_export.iter_csv(_csv_rows(session, batch), chunk_rows=batch)
