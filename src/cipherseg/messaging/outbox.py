"""The outbox gateway: "sends" by writing the message to the ``msg_outbox`` table.

The default gateway of the platform, for demonstrations and for running campaigns without
an SMS contract: every message that would go out is recorded with its masked recipient,
text, encoding and parts, and counts as delivered at once. It never opens the sealed number
— it has no opener to do it with. It is idempotent: the outbox holds at most one row per
message, so an attempt repeated after a crash is recognised and not recorded twice.

>>> from sqlalchemy import create_engine
>>> from cipherseg.messaging.schema import standalone_tables
>>> from cipherseg.messaging.store import SqlMessageStore
>>> store = SqlMessageStore(create_engine("sqlite://"), standalone_tables())
>>> store.create_schema()
>>> OutboxGateway(store).idempotent
True
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from cipherseg.clock import utcnow
from cipherseg.messaging.gateway import OutboundSms, SendResult, SendStatus
from cipherseg.messaging.store import SqlMessageStore


class OutboxGateway:
    """A :class:`~cipherseg.messaging.gateway.Gateway` that records messages in a table."""

    name = "outbox"
    idempotent = True

    def __init__(self, store: SqlMessageStore) -> None:
        self.store = store

    def send(self, sms: OutboundSms) -> SendResult:
        """Record the message (once); DELIVERED, or DOWN if the database is unreachable."""
        t = self.store.t.outbox
        row: dict[str, Any] = {
            "message_id": sms.message_id, "attempt": sms.attempt, "to_masked": sms.phone.masked,
            "sender": sms.sender, "body": sms.text, "encoding": sms.encoding,
            "parts": sms.parts, "created_at": utcnow()}
        try:
            with self.store.write() as conn:
                conn.execute(insert(t).values(**row))
        except IntegrityError:
            with self.store.engine.connect() as conn:
                exists = conn.execute(select(func.count()).select_from(t)
                                      .where(t.c.message_id == sms.message_id)).scalar_one()
            if exists:
                return SendResult(SendStatus.DELIVERED, "already in the outbox")
            return SendResult(SendStatus.FAILED, "the outbox refused the row")
        except OperationalError as exc:
            return SendResult(SendStatus.DOWN, f"outbox database error ({type(exc).__name__})")
        return SendResult(SendStatus.DELIVERED)

    def close(self) -> None:
        """Nothing to release (the engine belongs to the store)."""

    def messages(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest outbox rows (masked recipient, text, encoding, parts, time)."""
        t = self.store.t.outbox
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]
