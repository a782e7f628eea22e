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

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.pii.masking import redact_phones
from cipherseg.platform.models import AuditEvent, User

#: Every action the platform records (campaign code adds its own with a prefix).
ACTIONS = (
    "login", "login_failed", "login_throttled", "logout",
    "user_create", "user_update",
    "upload", "upload_imported", "upload_rejected", "upload_failed",
    "job_start", "job_finish", "job_failed", "job_publish",
    "result_view", "export", "erasure", "pii_rotate_key",
)
CSV_COLUMNS = ("id", "at", "actor", "role", "action", "object_type", "object_id", "ip",
               "detail")


def record(session: Session, action: str, *, actor: User | None,
           actor_name: str | None = None, object_type: str | None = None,
           object_id: str | int | None = None, ip: str | None = None,
           detail: dict[str, Any] | None = None, region: str = "CN") -> AuditEvent:
    """Add an event to ``session`` (committed with the caller's transaction)."""
    if detail is not None:
        detail = json.loads(redact_phones(json.dumps(detail, default=str), region=region))
    event = AuditEvent(
        actor_id=actor.id if actor else None,
        actor_name=(actor.username if actor else (actor_name or "system"))[:64],
        actor_role=actor.role if actor else None,
        action=action[:48],
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


def iter_csv(session: Session, *, batch: int = 1000) -> Iterator[str]:
    """The whole log as CSV text chunks (oldest first), streamed in batches."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    last = 0
    while True:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.id > last)
                                    .order_by(AuditEvent.id).limit(batch)))
        for e in rows:
            writer.writerow([e.id, e.at.isoformat(), e.actor_name, e.actor_role or "", e.action,
                             e.object_type or "", e.object_id or "", e.ip or "",
                             json.dumps(e.detail, sort_keys=True) if e.detail else ""])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if len(rows) < batch:
            return
        last = rows[-1].id
