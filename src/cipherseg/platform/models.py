"""SQLAlchemy 2 models of the platform; the schema itself is created by Alembic migrations.

Tables that hold a customer's rows reference ``customers.id`` with ``ON DELETE CASCADE`` so
that erasure (deleting the customer) removes them everywhere; a new table that refers to a
customer must do the same (the erasure test checks every foreign key to ``customers``).

The audit log is append-only: the ORM refuses to update or delete :class:`AuditEvent` rows
(flushes and bulk statements alike), and the migration adds database triggers that refuse it
too on SQLite, PostgreSQL and MariaDB.

>>> sorted(r.value for r in Role)
['admin', 'centre', 'merchant', 'operator', 'owner']
>>> [s.value for s in RequestStatus]
['pending', 'approved', 'declined', 'withdrawn']
>>> JobKind("segmentation") is JobKind.SEGMENTATION, JobStatus.DONE == "done"
(True, True)
>>> AuditEvent.__tablename__
'audit_events'
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from cipherseg.clock import utcnow
from cipherseg.errors import CipherSegError


class AppendOnlyError(CipherSegError):
    """Something tried to change or delete an audit log entry."""


class Role(enum.StrEnum):
    """The platform's roles (docs/architecture.md §1)."""

    ADMIN = "admin"
    OWNER = "owner"
    MERCHANT = "merchant"
    CENTRE = "centre"
    OPERATOR = "operator"


class JobKind(enum.StrEnum):
    """What a :class:`Job` does; each kind has a runner registered in ``create_app``
    (:func:`cipherseg.platform.app.job_runners`). The values are stored in ``jobs.kind``."""

    IMPORT = "import"
    SEGMENTATION = "segmentation"
    JOINT = "joint"
    JOINT_NODE = "joint_node"
    VERTICAL_NODE = "vertical_node"
    CAMPAIGN = "campaign"


class JobStatus(enum.StrEnum):
    """Where a :class:`Job` is: waiting, being run by a worker, finished or failed."""

    #: A joint job waiting for every participant's consent (no worker claims it).
    AWAITING = "awaiting"
    #: A vertical job a merchant's node asked for, waiting for the owner's decision
    #: (no worker claims it); ``declined`` when the owner says no.
    REQUESTED = "requested"
    DECLINED = "declined"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


#: A job that is not finished yet (queued, or being run).
JOB_PENDING = (JobStatus.QUEUED, JobStatus.RUNNING)


class UploadStatus(enum.StrEnum):
    """Where an :class:`Upload` is; ``imported``, ``rejected`` and ``failed`` are final."""

    QUEUED = "queued"
    VALIDATING = "validating"
    IMPORTING = "importing"
    IMPORTED = "imported"
    REJECTED = "rejected"
    FAILED = "failed"


#: The statuses after which an upload no longer changes.
UPLOAD_FINISHED = (UploadStatus.IMPORTED, UploadStatus.REJECTED, UploadStatus.FAILED)


ROLE_TITLES = {
    Role.ADMIN: "Administrator",
    Role.OWNER: "Data owner",
    Role.MERCHANT: "Merchant",
    Role.CENTRE: "Compute centre",
    Role.OPERATOR: "Advertising operator",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC as naive timestamps on every backend, returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use cipherseg's utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# Large blobs: BLOB is 64 KiB on MariaDB, so use LONGBLOB there.
BigBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
BigText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
# Integer ids that SQLite can autoincrement (BIGINT is not its rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base; other packages (messaging) add their tables to the same metadata."""

    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Set by an administrator's reset: the next login may only change the password.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    #: A temporary password stops working at this time (``None``: a normal password).
    password_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @property
    def role_enum(self) -> Role:
        return Role(self.role)


class RolePermission(Base):
    """One cell of the permission matrix: ``role`` holds ``permission``."""

    __tablename__ = "role_permissions"

    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    permission: Mapped[str] = mapped_column(String(32), primary_key=True)


class Counter(Base):
    """Per-scope sequence numbers (``segmentation:<owner id>``, ``upload:<owner id>``, ...):
    each kind of object has its own numbering in URLs and titles."""

    __tablename__ = "counters"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class LoginFailure(Base):
    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class WebSession(Base):
    """A login session; the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Customer(Base):
    """A data owner's customer. Phone and first name only as AES-GCM ciphertexts."""

    __tablename__ = "customers"
    __table_args__ = (UniqueConstraint("owner_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    pseudonym: Mapped[str] = mapped_column(String(32), unique=True)
    phone_ct: Mapped[bytes] = mapped_column(LargeBinary(512))
    #: HMAC pseudonym of the E.164 number: joins (opt-out by number) without decrypting.
    phone_hmac: Mapped[str] = mapped_column(String(32), index=True)
    phone_masked: Mapped[str] = mapped_column(String(32))
    first_name_ct: Mapped[bytes | None] = mapped_column(LargeBinary(512), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    consent: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Keyed digest of the imported row: re-importing the same row changes nothing.
    row_digest: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (UniqueConstraint("owner_id", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    #: Date, amount and category, encrypted together (:mod:`cipherseg.platform.purchases`).
    payload_ct: Mapped[bytes] = mapped_column(LargeBinary(512))
    row_digest: Mapped[str] = mapped_column(String(32))


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("owner_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    #: The owner's own upload number (1, 2, ...): what URLs and titles show.
    number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_path: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.QUEUED.value)
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    n_errors: Mapped[int] = mapped_column(Integer, default=0)
    n_inserted: Mapped[int] = mapped_column(Integer, default=0)
    n_updated: Mapped[int] = mapped_column(Integer, default=0)
    n_unchanged: Mapped[int] = mapped_column(Integer, default=0)
    #: The whole error report of uploads made before 0005 (newer ones: UploadError rows).
    error_report: Mapped[bytes | None] = mapped_column(BigBlob, nullable=True)
    #: Problems per column of a rejected upload (``""``: the row as a whole), all counted;
    #: the first ones of each column are UploadError rows.
    error_counts: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class UploadError(Base):
    """One problem of a rejected upload, as the report shows it (value masked or
    shortened). Only the first problems of each column are kept (:data:`cipherseg.platform.
    uploads.KEEP_PER_COLUMN`); ``Upload.error_counts`` counts them all."""

    __tablename__ = "upload_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id", ondelete="CASCADE"),
                                           index=True)
    row: Mapped[int] = mapped_column(Integer)
    column: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(80))
    message: Mapped[str] = mapped_column(String(300))


class Job(Base):
    """A unit of background work: an import, a segmentation, a joint job, a campaign send.

    ``number`` counts per kind (and per owner for the kinds that belong to one owner):
    an owner's first segmentation is segmentation #1 whatever else the platform ran.
    Releases are :class:`ReleaseGrant` rows.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),
                      UniqueConstraint("kind", "owner_id", "number"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(128), default=JobStatus.QUEUED.value)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: A queued job is not claimed before this time (a campaign waiting for quiet hours to
    #: end, or for its scheduled start, sleeps in its own row).
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Segment(Base):
    """One cluster of a finished segmentation: size, centroid in business units, name."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    centroid: Mapped[dict[str, float]] = mapped_column(JSON)


class SegmentMember(Base):
    """The label of one pseudonymised customer in one job (never shown to merchants)."""

    __tablename__ = "segment_members"

    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, index=True)
    pseudonym: Mapped[str] = mapped_column(String(32))
    segment_index: Mapped[int] = mapped_column(Integer)


class ReleaseGrant(Base):
    """A release: the owner of a finished segmentation (single or joint) grants it to one
    merchant. Revoking keeps the row (``revoked_at``) for the owner's overview; the audit log
    keeps every grant and revocation."""

    __tablename__ = "release_grants"
    __table_args__ = (UniqueConstraint("job_id", "merchant_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    granted_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The merchant's request this release answers, if any.
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("segmentation_requests.id", ondelete="SET NULL"), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class RequestStatus(enum.StrEnum):
    """A segmentation request's decision (what the run then does is the job's status)."""

    PENDING = "pending"
    APPROVED = "approved"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


class SegmentationRequest(Base):
    """A merchant asks a data owner for a segmentation: purpose, k (``None``: the owner's
    run chooses), time window and features. Approval queues the job and grants its release
    to the merchant; declining records the owner's reason."""

    __tablename__ = "segmentation_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(500))
    k: Mapped[int | None] = mapped_column(Integer, nullable=True)
    window_from: Mapped[date | None] = mapped_column(Date, nullable=True)
    window_to: Mapped[date | None] = mapped_column(Date, nullable=True)
    window_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.PENDING.value,
                                        index=True)
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)


class AuditEvent(Base):
    """One security-relevant event. Append-only (ORM guard + database triggers)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor_name: Mapped[str] = mapped_column(String(64))
    actor_role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(48), index=True)
    object_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


# ------------------------------------------------------------------ append-only guard
@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEvent) and (obj in session.deleted or session.is_modified(obj)):
            raise AppendOnlyError("the audit log is append-only: entries cannot be changed or "
                                  "deleted")


@event.listens_for(Session, "do_orm_execute")
def _refuse_audit_bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    table = getattr(state.statement, "table", None)
    if table is not None and getattr(table, "name", None) == AuditEvent.__tablename__:
        raise AppendOnlyError("the audit log is append-only: UPDATE/DELETE on audit_events "
                              "is refused")


# ------------------------------------------------------------------ messaging tables
# cipherseg.messaging's tables (campaigns, messages, opt-outs, outbox) live in this metadata,
# messages cascading on customer erasure; migration 0002_messaging creates them.
from cipherseg.messaging.schema import define_tables as _define_messaging_tables  # noqa: E402

MESSAGING = _define_messaging_tables(Base.metadata, customer_table="customers")
