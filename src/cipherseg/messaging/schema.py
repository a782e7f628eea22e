"""The messaging tables (SQLAlchemy Core), addable to any ``MetaData``.

The library owns its tables but not their metadata: :func:`define_tables` adds them to the
metadata it is given, so the platform puts them next to its own models (and its Alembic
migrations create them, with foreign keys to ``customers`` that cascade on erasure), while
the library alone — tests, the benchmark, a standalone worker — uses
:func:`standalone_tables` and ``create_all``.

No table holds a phone number: messages carry a keyed pseudonym of the number
(``phone_key``, for opt-outs, suppression and caps) and the outbox the masked form.

>>> t = standalone_tables()
>>> sorted(t.metadata.tables)  # doctest: +NORMALIZE_WHITESPACE
['msg_campaign_segments', 'msg_campaigns', 'msg_delivery_reports', 'msg_messages',
 'msg_outbox', 'msg_suppressions']
>>> define_tables(t.metadata) is t
True
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

#: Naming convention shared with the platform (so Alembic names constraints the same way).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Integer ids that SQLite can autoincrement (BIGINT is not its rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes stored as naive UTC on every backend."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name in ("mysql", "mariadb"):  # keep microseconds (DATETIME(6))
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, eq=False)
class MessagingTables:
    """The messaging tables of one metadata."""

    metadata: MetaData
    campaigns: Table
    segments: Table
    messages: Table
    reports: Table
    suppressions: Table
    outbox: Table

    def create_all(self, engine: Engine) -> None:
        """Create the messaging tables that do not exist yet (standalone use; the platform
        uses its migrations)."""
        tables = [self.campaigns, self.segments, self.messages, self.reports,
                  self.suppressions, self.outbox]
        self.metadata.create_all(engine, tables=tables)

    def drop_all(self, engine: Engine) -> None:
        """Drop the messaging tables."""
        tables = [self.campaigns, self.segments, self.messages, self.reports,
                  self.suppressions, self.outbox]
        self.metadata.drop_all(engine, tables=tables)


_REGISTRY: dict[int, MessagingTables] = {}


def define_tables(metadata: MetaData, *, customer_table: str | None = None) -> MessagingTables:
    """Add the messaging tables to ``metadata`` (once; later calls return the same tables).

    ``customer_table`` names a table with an integer ``id`` (the platform's ``customers``):
    messages then get a ``customer_id`` foreign key with ``ON DELETE CASCADE``, so erasing a
    customer erases their messages and outbox rows too.
    """
    existing = _REGISTRY.get(id(metadata))
    if existing is not None and existing.metadata is metadata:
        return existing

    campaigns = Table(
        "msg_campaigns", metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(128), nullable=False),
        Column("shop_name", String(128), nullable=False, default=""),
        Column("sender", String(32), nullable=True),
        Column("opt_out_text", String(160), nullable=False, default=""),
        Column("status", String(24), nullable=False, default="draft"),
        Column("created_by", String(64), nullable=True),
        Column("approved_by", String(64), nullable=True),
        Column("settings", JSON, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("approved_at", UTCDateTime, nullable=True),
        Column("started_at", UTCDateTime, nullable=True),
        Column("finished_at", UTCDateTime, nullable=True),
        #: A send planned for later: the campaign starts at this time.
        Column("scheduled_at", UTCDateTime, nullable=True),
    )
    segments = Table(
        "msg_campaign_segments", metadata,
        Column("id", Integer, primary_key=True),
        Column("campaign_id", Integer, ForeignKey("msg_campaigns.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("segment_key", String(64), nullable=False),
        Column("segment_name", String(128), nullable=False),
        Column("template", Text, nullable=False),
        #: The template's language and the opt-out line that goes with it.
        Column("language", String(8), nullable=True),
        Column("opt_out_text", String(160), nullable=True),
        UniqueConstraint("campaign_id", "segment_key",
                         name="uq_msg_campaign_segments_campaign_segment"),
    )
    customer_cols: list[Any] = []
    if customer_table is not None:
        customer_cols.append(Column(
            "customer_id", BigId, ForeignKey(f"{customer_table}.id", ondelete="CASCADE"),
            nullable=True, index=True))
    messages = Table(
        "msg_messages", metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("campaign_id", Integer, ForeignKey("msg_campaigns.id", ondelete="CASCADE"),
               nullable=False),
        Column("segment_key", String(64), nullable=False),
        Column("customer_ref", String(64), nullable=False),
        *customer_cols,
        #: The idempotency key: one message per (campaign, customer), ever.
        Column("idem_key", String(64), nullable=False, unique=True),
        #: Keyed pseudonym of the number (never the number).
        Column("phone_key", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("reason", String(255), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        #: Attempts made before the last manual retry (the retry limit counts from here).
        Column("attempt_base", Integer, nullable=False, default=0, server_default="0"),
        #: "treated" or "holdout" (the random split for lift measurement, among customers
        #: sendable when the campaign was queued); NULL for customers skipped then.
        Column("arm", String(8), nullable=True),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("lease_owner", String(64), nullable=True),
        Column("lease_until", UTCDateTime, nullable=True),
        Column("attempt_at", UTCDateTime, nullable=True),
        Column("sent_at", UTCDateTime, nullable=True),
        Column("delivered_at", UTCDateTime, nullable=True),
        Column("encoding", String(8), nullable=True),
        Column("parts", Integer, nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Index("ix_msg_messages_due", "state", "next_attempt_at"),
        Index("ix_msg_messages_campaign_state", "campaign_id", "state"),
        Index("ix_msg_messages_phone_sent", "phone_key", "sent_at"),
    )
    reports = Table(
        "msg_delivery_reports", metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("message_id", BigId, ForeignKey("msg_messages.id", ondelete="CASCADE"),
               nullable=False, index=True),
        Column("attempt", Integer, nullable=False),
        Column("status", Integer, nullable=False),
        Column("applied", Boolean, nullable=False, default=False),
        Column("at", UTCDateTime, nullable=False),
    )
    suppressions = Table(
        "msg_suppressions", metadata,
        Column("id", Integer, primary_key=True),
        Column("phone_key", String(64), nullable=False),
        #: "opt_out" (the person asked) or "suppressed" (the business decided).
        Column("kind", String(16), nullable=False),
        Column("source", String(48), nullable=False),
        Column("note", String(255), nullable=True),
        Column("created_at", UTCDateTime, nullable=False),
        UniqueConstraint("phone_key", "kind", name="uq_msg_suppressions_phone_kind"),
    )
    outbox = Table(
        "msg_outbox", metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("message_id", BigId, ForeignKey("msg_messages.id", ondelete="CASCADE"),
               nullable=False, unique=True),
        Column("attempt", Integer, nullable=False),
        Column("to_masked", String(32), nullable=False),
        Column("sender", String(32), nullable=True),
        Column("body", Text, nullable=False),
        Column("encoding", String(8), nullable=False),
        Column("parts", Integer, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
    )
    tables = MessagingTables(metadata, campaigns, segments, messages, reports, suppressions,
                             outbox)
    _REGISTRY[id(metadata)] = tables
    return tables


def memory_engine() -> Engine:
    """An in-memory SQLite engine shared by all threads (examples and quick tests).

    >>> memory_engine().dialect.name
    'sqlite'
    """
    return create_engine("sqlite://", poolclass=StaticPool,
                         connect_args={"check_same_thread": False})


def standalone_tables() -> MessagingTables:
    """The messaging tables in a metadata of their own (no platform)."""
    return define_tables(MetaData(naming_convention=NAMING))
