"""Persistence of campaigns, messages, delivery reports and suppressions.

:class:`MessageStore` is what the sending engine and the callback handlers need;
:class:`SqlMessageStore` implements it with SQLAlchemy Core on SQLite, PostgreSQL and
MariaDB, over tables made by :mod:`cipherseg.messaging.schema` (standalone or inside the
platform's metadata).

Message states and who moves them::

    queued ──claim+begin──▶ sending ──accepted──▶ sent ──DLR 1──▶ delivered
      ▲  │                     │  │                  │  └─DLR 2──▶ failed
      │  └──rules──▶ skipped   │  └─refused────────────────────▶ failed
      └────retry/down/DLR 16───┴──────────────────────┘            │
      └──────────────── operator retry (same row, same key) ───────┘
    sending with an expired lease (worker died, or the answer was lost) ──reconcile──▶ queued
    holdout: sendable when queued, randomly kept out to measure the effect (never sent)

Every transition is a conditional ``UPDATE`` (``WHERE state = … AND attempts = …``), so a
late worker, a duplicate or stale delivery report, or two workers racing cannot move a
message backwards or send it twice. Claims are leases: a claimed message that is not
finished before ``lease_until`` is claimable again.

>>> from sqlalchemy import create_engine
>>> from cipherseg.messaging.schema import standalone_tables
>>> store = SqlMessageStore(create_engine("sqlite://"), standalone_tables())
>>> store.create_schema()
>>> cid = store.create_campaign("Spring", [CampaignSegment("s1", "Loyal", "Hi {{ opt_out }}")],
...                             shop_name="Joy Mall", opt_out_text="Reply STOP")
>>> store.campaign(cid).segments[0].name
'Loyal'
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from cipherseg.clock import utcnow
from cipherseg.errors import ParameterError, ValidationError
from cipherseg.messaging.gateway import SendStatus
from cipherseg.messaging.rules import RetryPolicy
from cipherseg.messaging.schema import MessagingTables

MessageState = Literal["queued", "sending", "sent", "delivered", "failed", "skipped",
                       "holdout"]
MESSAGE_STATES: tuple[str, ...] = ("queued", "sending", "sent", "delivered", "failed",
                                   "skipped", "holdout")
#: ``starting``: the audience is being queued; ``approved`` is what older versions stored
#: for that. The last five say how a campaign ended (:meth:`SqlMessageStore.outcome`).
CAMPAIGN_STATES: tuple[str, ...] = (
    "draft", "pending_approval", "scheduled", "approved", "starting", "sending", "paused",
    "completed", "completed_with_failures", "failed", "partly_sent", "cancelled", "test")
#: Statuses of a campaign that has ended (nothing queued or in flight).
FINISHED_STATES: tuple[str, ...] = ("completed", "completed_with_failures", "failed",
                                    "partly_sent", "cancelled")
#: Finished statuses a late retry (an SMSC rejection report) or an operator's retry reopens.
REOPENABLE_STATES: tuple[str, ...] = ("completed", "completed_with_failures", "failed")
SUPPRESSION_KINDS: tuple[str, ...] = ("opt_out", "suppressed")

#: Delivery report values of Kannel's ``%d`` (the SMPP/Kannel convention).
DLR_DELIVERED, DLR_UNDELIVERED, DLR_BUFFERED, DLR_SUBMITTED, DLR_REJECTED = 1, 2, 4, 8, 16

_CHUNK = 500
_T = TypeVar("_T")

log = logging.getLogger("cipherseg.messaging")


def idempotency_key(campaign_id: int, customer_ref: str) -> str:
    """The key that makes a (campaign, customer) pair one message, ever.

    >>> idempotency_key(1, "42") == idempotency_key(1, "42") != idempotency_key(2, "42")
    True
    """
    return hashlib.sha256(f"cipherseg-msg/{campaign_id}/{customer_ref}".encode()).hexdigest()


_SQLITE_LOCKS: dict[str, threading.Lock] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


def _sqlite_lock(engine: Engine) -> threading.Lock:
    """One lock per SQLite database file in this process (shared by every store on it)."""
    db = engine.url.database
    key = str(Path(db).resolve()) if db and db != ":memory:" else f"memory@{id(engine)}"
    with _SQLITE_LOCKS_GUARD:
        return _SQLITE_LOCKS.setdefault(key, threading.Lock())


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True, slots=True)
class CampaignSegment:
    """One segment of a campaign and the template its members get, in ``language`` with
    ``opt_out_text`` as its opt-out line (``None``: the campaign's line)."""

    key: str
    name: str
    template: str
    language: str | None = None
    opt_out_text: str | None = None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign as stored."""

    id: int
    name: str
    shop_name: str
    sender: str | None
    opt_out_text: str
    status: str
    segments: tuple[CampaignSegment, ...]
    settings: Mapping[str, Any]
    created_by: str | None
    approved_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    scheduled_at: datetime | None = None

    def segment(self, key: str) -> CampaignSegment:
        """The segment ``key`` of this campaign."""
        for seg in self.segments:
            if seg.key == key:
                return seg
        raise ValidationError(f"campaign {self.id} has no segment {key!r}")

    def opt_out_for(self, key: str) -> str:
        """The opt-out line of segment ``key`` (its own, else the campaign's)."""
        return self.segment(key).opt_out_text or self.opt_out_text


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue: whose, and whether the rules already skip it."""

    customer_ref: str
    phone_key: str
    state: Literal["queued", "skipped", "holdout"] = "queued"
    reason: str | None = None
    customer_id: int | None = None
    next_attempt_at: datetime | None = None
    #: "treated" or "holdout" for a customer sendable at queueing time, else ``None``.
    arm: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A message leased to one worker."""

    id: int
    campaign_id: int
    segment_key: str
    customer_ref: str
    phone_key: str
    attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt, as the engine records it."""

    message_id: int
    attempt: int
    status: SendStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """How many messages a call to :meth:`MessageStore.enqueue` added, by state."""

    queued: int = 0
    skipped: int = 0
    already_present: int = 0
    holdout: int = 0


_COUNTS = ("members", "unreachable", "audience", "holdout", "queued", "held", "sending",
           "sent", "delivered", "failed", "skipped", "opted_out")
_REASONS = ("unreachable_reasons", "skipped_reasons", "failed_reasons")


@dataclass
class SegmentReport:
    """Counts for one segment of a campaign.

    ``members`` is every customer the campaign looked at; ``unreachable`` of them could not
    be sent to when it was queued (no consent, opted out, over the cap, duplicate number —
    ``unreachable_reasons``); the rest is the ``audience``. Of the audience, ``holdout``
    customers were randomly kept out to measure the effect; every other one is ``queued``
    (``held`` of them until quiet hours end), ``sending``, ``sent``, ``delivered``,
    ``failed`` (``failed_reasons``) or ``skipped`` at send time (``skipped_reasons``, e.g.
    opted out since). ``opted_out`` counts numbers that opted out after their message went.
    """

    segment_key: str
    segment_name: str
    members: int = 0
    unreachable: int = 0
    audience: int = 0
    holdout: int = 0
    queued: int = 0
    held: int = 0
    sending: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    opted_out: int = 0
    unreachable_reasons: dict[str, int] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    failed_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reached(self) -> int:
        """Messages the gateway accepted (sent or delivered)."""
        return self.sent + self.delivered

    @property
    def to_send(self) -> int:
        """The audience without the holdout: the customers meant to get the message."""
        return self.audience - self.holdout

    @property
    def waiting(self) -> int:
        """Messages not finished yet (queued, held or in flight)."""
        return self.queued + self.held + self.sending

    def top_failures(self, n: int = 3) -> list[tuple[str, int]]:
        """The ``n`` most frequent failure reasons with their counts, most frequent first."""
        return sorted(self.failed_reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@dataclass
class CampaignReport:
    """Per-segment counts and their totals."""

    campaign_id: int
    segments: list[SegmentReport]

    @property
    def total(self) -> SegmentReport:
        """All segments added up."""
        tot = SegmentReport("*", "All segments")
        reasons: dict[str, Counter[str]] = {name: Counter() for name in _REASONS}
        for s in self.segments:
            for name in _COUNTS:
                setattr(tot, name, getattr(tot, name) + getattr(s, name))
            for name in _REASONS:
                reasons[name].update(getattr(s, name))
        for name in _REASONS:
            setattr(tot, name, dict(reasons[name]))
        return tot


class MessageStore(Protocol):
    """What the engine and the callback handlers need from persistence."""

    def campaign(self, campaign_id: int) -> Campaign: ...

    def enqueue(self, campaign_id: int, segment_key: str, messages: Iterable[NewMessage],
                *, now: datetime | None = None) -> EnqueueResult: ...

    def claim(self, owner: str, *, now: datetime, limit: int, lease: timedelta,
              campaign_id: int | None = None) -> list[ClaimedMessage]: ...

    def settle(self, owner: str, *, skips: Sequence[tuple[int, str]],
               holds: Sequence[tuple[int, datetime, str]], now: datetime) -> None: ...

    def begin_attempts(self, owner: str, messages: Sequence[ClaimedMessage],
                       encodings: Mapping[int, tuple[str, int]], *,
                       now: datetime) -> set[int]: ...

    def sending_campaigns(self) -> list[int]: ...

    def record_outcomes(self, outcomes: Sequence[Outcome], *, retry: RetryPolicy,
                        now: datetime, down_until: datetime | None = None) -> None: ...

    def record_delivery_report(self, message_id: int, attempt: int, status: int, *,
                               retry: RetryPolicy, now: datetime | None = None) -> str: ...

    def record_delivery_reports(self, reports: Sequence[tuple[int, int, int]], *,
                                retry: RetryPolicy,
                                now: datetime | None = None) -> list[str]: ...

    def reconcile(self, *, now: datetime, grace: timedelta,
                  campaign_id: int | None = None) -> int: ...

    def suppression_kinds(self, phone_keys: Iterable[str]) -> dict[str, set[str]]: ...

    def recent_sends(self, phone_keys: Iterable[str], *, since: datetime,
                     exclude_ids: Iterable[int] = ()) -> dict[str, int]: ...

    def add_suppression(self, phone_key: str, kind: str, *, source: str,
                        note: str | None = None, now: datetime | None = None) -> bool: ...

    def remove_suppression(self, phone_key: str, kind: str) -> bool: ...

    def work_left(self, campaign_id: int, *, now: datetime,
                  reports_since: datetime | None = None) -> tuple[int, datetime | None]: ...

    def finish_if_done(self, campaign_id: int, *, now: datetime,
                       reports_since: datetime | None = None) -> bool: ...


class SqlMessageStore:
    """:class:`MessageStore` on SQLAlchemy Core (SQLite, PostgreSQL, MariaDB/MySQL).

    Parameters
    ----------
    engine:
        A SQLAlchemy engine (the platform's, or one of its own).
    tables:
        From :func:`~cipherseg.messaging.schema.define_tables` or
        :func:`~cipherseg.messaging.schema.standalone_tables`.
    """

    def __init__(self, engine: Engine, tables: MessagingTables) -> None:
        self.engine = engine
        self.t = tables
        self._sqlite = engine.dialect.name == "sqlite"
        self._write_lock = _sqlite_lock(engine) if self._sqlite else None
        #: ``UPDATE … RETURNING`` (PostgreSQL, SQLite; not MariaDB): a claim, or a batch
        #: marked ``sending``, is one statement that says which rows it took.
        self._returning = bool(engine.dialect.update_returning)
        self._may_analyse = True

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite: one writer per process at a time (threads queue
        on a lock instead of SQLite's sleeping busy handler) and ``BEGIN IMMEDIATE``, so a
        transaction that reads first never fails to upgrade to a write lock."""
        if self._write_lock is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def create_schema(self) -> None:
        """Create the tables (standalone use; the platform runs its migrations)."""
        self.t.create_all(self.engine)

    # ------------------------------------------------------------------ campaigns
    def create_campaign(self, name: str, segments: Sequence[CampaignSegment], *,
                        shop_name: str = "", opt_out_text: str = "",
                        sender: str | None = None, created_by: str | None = None,
                        settings: Mapping[str, Any] | None = None,
                        status: str = "draft", scheduled_at: datetime | None = None,
                        now: datetime | None = None) -> int:
        """Store a campaign and its per-segment templates; returns its id."""
        if not name.strip():
            raise ValidationError("a campaign needs a name")
        if not segments:
            raise ValidationError("a campaign needs at least one segment with a template")
        keys = [s.key for s in segments]
        if len(set(keys)) != len(keys):
            raise ValidationError("each segment can appear only once in a campaign")
        if status not in CAMPAIGN_STATES:
            raise ParameterError(f"unknown campaign status {status!r}")
        now = now or utcnow()
        with self.write() as conn:
            key = conn.execute(insert(self.t.campaigns).values(
                name=name.strip(), shop_name=shop_name, opt_out_text=opt_out_text,
                sender=sender, created_by=created_by, settings=dict(settings or {}),
                status=status, created_at=now, scheduled_at=scheduled_at)).inserted_primary_key
            if key is None:
                raise ParameterError("the database returned no id for the new campaign")
            cid = key[0]
            conn.execute(insert(self.t.segments), [
                {"campaign_id": cid, "segment_key": s.key, "segment_name": s.name,
                 "template": s.template, "language": s.language,
                 "opt_out_text": s.opt_out_text} for s in segments])
        return int(cid)

    def _campaign_from_row(self, row: Row[Any], segs: list[Row[Any]]) -> Campaign:
        m = row._mapping
        return Campaign(
            id=m["id"], name=m["name"], shop_name=m["shop_name"], sender=m["sender"],
            opt_out_text=m["opt_out_text"], status=m["status"],
            segments=tuple(CampaignSegment(s.segment_key, s.segment_name, s.template,
                                           s.language, s.opt_out_text) for s in segs),
            settings=dict(m["settings"] or {}), created_by=m["created_by"],
            approved_by=m["approved_by"], created_at=m["created_at"],
            started_at=m["started_at"], finished_at=m["finished_at"],
            scheduled_at=m["scheduled_at"])

    def campaign(self, campaign_id: int) -> Campaign:
        """Load one campaign; :class:`ValidationError` if it does not exist."""
        c, s = self.t.campaigns, self.t.segments
        with self.engine.connect() as conn:
            row = conn.execute(select(c).where(c.c.id == campaign_id)).first()
            if row is None:
                raise ValidationError(f"there is no campaign {campaign_id}")
            segs = list(conn.execute(select(s).where(s.c.campaign_id == campaign_id)
                                     .order_by(s.c.id)))
        return self._campaign_from_row(row, segs)

    def campaigns(self, *, limit: int = 100, status: Iterable[str] | None = None,
                  exclude_status: Iterable[str] = ("test",)) -> list[Campaign]:
        """The newest campaigns first (test messages left out unless asked for)."""
        c, s = self.t.campaigns, self.t.segments
        q = select(c).order_by(c.c.id.desc()).limit(limit)
        if status is not None:
            q = q.where(c.c.status.in_(list(status)))
        excluded = list(exclude_status)
        if excluded:
            q = q.where(c.c.status.not_in(excluded))
        with self.engine.connect() as conn:
            rows = list(conn.execute(q))
            ids = [r.id for r in rows]
            segs: dict[int, list[Row[Any]]] = defaultdict(list)
            if ids:
                for seg in conn.execute(select(s).where(s.c.campaign_id.in_(ids))
                                        .order_by(s.c.id)):
                    segs[seg.campaign_id].append(seg)
        return [self._campaign_from_row(r, segs[r.id]) for r in rows]

    def update_settings(self, campaign_id: int, values: Mapping[str, Any], *,
                        keep_existing: bool = False) -> dict[str, Any]:
        """Merge ``values`` into a campaign's settings (in one write transaction); with
        ``keep_existing`` a key already set is not replaced (a value computed once, such
        as a noisy release, stays the first one). Returns the settings as stored."""
        c = self.t.campaigns
        with self.write() as conn:
            current = conn.execute(select(c.c.settings).where(c.c.id == campaign_id)
                                   .with_for_update()).first()
            if current is None:
                raise ValidationError(f"there is no campaign {campaign_id}")
            old = dict(current[0] or {})
            new = {k: v for k, v in values.items() if not (keep_existing and k in old)}
            merged = {**old, **new}
            if new:
                conn.execute(update(c).where(c.c.id == campaign_id).values(settings=merged))
        return merged

    def transition_campaign(self, campaign_id: int, to: str, *, allowed_from: Iterable[str],
                            actor: str | None = None, now: datetime | None = None,
                            approved_by: str | None = None,
                            scheduled_at: datetime | None = None) -> bool:
        """Move a campaign to status ``to`` if it is in one of ``allowed_from``.

        ``approved_by`` records an approval (``to="approved"`` records ``actor``);
        ``scheduled_at`` sets the planned start. Returns ``False`` (and changes nothing)
        otherwise, e.g. for a double click.
        """
        if to not in CAMPAIGN_STATES:
            raise ParameterError(f"unknown campaign status {to!r}")
        now = now or utcnow()
        c = self.t.campaigns
        values: dict[str, Any] = {"status": to}
        if to == "approved" and approved_by is None:
            approved_by = actor
        if approved_by is not None:
            values.update(approved_by=approved_by, approved_at=now)
        if scheduled_at is not None:
            values["scheduled_at"] = scheduled_at
        if to == "sending":
            values["started_at"] = func.coalesce(c.c.started_at, now)
            values["finished_at"] = None
        if to in FINISHED_STATES:
            values["finished_at"] = now
        with self.write() as conn:
            res = conn.execute(update(c).where(c.c.id == campaign_id,
                                               c.c.status.in_(list(allowed_from)))
                               .values(**values))
        return bool(res.rowcount)

    # ------------------------------------------------------------------ queueing
    def enqueue(self, campaign_id: int, segment_key: str, messages: Iterable[NewMessage],
                *, now: datetime | None = None) -> EnqueueResult:
        """Add one message per customer of a segment; customers already in the campaign are
        left alone (the idempotency key), and a second customer with the same number is
        skipped as a duplicate. Customers in the holdout get a row in state ``holdout``
        (never sent)."""
        now = now or utcnow()
        m = self.t.messages
        has_customer = "customer_id" in m.c
        counts = Counter[str]()
        batch: list[NewMessage] = []

        def flush() -> None:
            if not batch:
                return
            keys = {idempotency_key(campaign_id, x.customer_ref): x for x in batch}
            with self.write() as conn:
                existing = set(conn.execute(select(m.c.idem_key)
                                            .where(m.c.idem_key.in_(list(keys)))).scalars())
                numbers = {x.phone_key for x in batch}
                taken = set(conn.execute(
                    select(m.c.phone_key).where(m.c.campaign_id == campaign_id,
                                                m.c.phone_key.in_(list(numbers)),
                                                m.c.state != "skipped")).scalars())
                rows = []
                for key, x in keys.items():
                    if key in existing:
                        counts["present"] += 1
                        continue
                    state, reason = x.state, x.reason
                    arm = x.arm or {"queued": "treated", "holdout": "holdout"}.get(state)
                    if state in ("queued", "holdout"):
                        if x.phone_key in taken:
                            state, reason, arm = "skipped", "duplicate number in campaign", None
                        else:
                            taken.add(x.phone_key)
                    row = {"campaign_id": campaign_id, "segment_key": segment_key,
                           "customer_ref": x.customer_ref, "idem_key": key,
                           "phone_key": x.phone_key, "state": state, "reason": reason,
                           "arm": arm, "attempts": 0, "attempt_base": 0,
                           "next_attempt_at": x.next_attempt_at or now,
                           "created_at": now, "updated_at": now}
                    if has_customer:
                        row["customer_id"] = x.customer_id
                    rows.append(row)
                    counts[state] += 1
                if rows:
                    try:
                        conn.execute(insert(m), rows)
                    except IntegrityError as exc:
                        raise ValidationError(
                            f"campaign {campaign_id} was queued concurrently by another "
                            "process; queue it again (nothing is sent twice)") from exc
            batch.clear()

        analysed_at = _CHUNK
        for x in messages:
            batch.append(x)
            if len(batch) >= _CHUNK:
                flush()
                if counts.total() - counts["present"] >= 2 * analysed_at:
                    analysed_at = counts.total() - counts["present"]
                    self.refresh_statistics()
        flush()
        if counts.total() > counts["present"]:
            self.refresh_statistics()
        return EnqueueResult(counts["queued"], counts["skipped"], counts["present"],
                             counts["holdout"])

    def refresh_statistics(self) -> None:
        """On PostgreSQL, ``ANALYZE`` the messages table (rows were just queued).

        Without statistics on rows this young (autovacuum looks once a minute) the planner
        expects one row per campaign and reads every message of the campaign to check 500
        numbers for duplicates — queueing 10 000 customers took 6.3 s, 50 000 took 136 s —
        and scans the state index for every batch marked ``sending``. Done while queueing
        each time the rows added double, and at the end. A database role that may not
        analyse the table only loses the speed.
        """
        if self.engine.dialect.name != "postgresql" or not self._may_analyse:
            return
        try:
            with self.engine.begin() as conn:
                table = conn.dialect.identifier_preparer.format_table(self.t.messages)
                conn.exec_driver_sql(f"ANALYZE {table}")
        except DBAPIError as exc:
            self._may_analyse = False
            log.info("cannot ANALYZE %s (%s); queueing large campaigns will be slower",
                     self.t.messages.name, type(exc.orig).__name__)

    # ------------------------------------------------------------------ sending
    def claim(self, owner: str, *, now: datetime, limit: int, lease: timedelta,
              campaign_id: int | None = None) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due messages of campaigns that are sending.

        ``owner`` must be unique per call (e.g. worker id + a counter): it is the lease.
        """
        m, c = self.t.messages, self.t.campaigns
        free = or_(m.c.lease_until.is_(None), m.c.lease_until < now)
        sending = select(c.c.id).where(c.c.status == "sending")
        if campaign_id is not None:
            sending = sending.where(c.c.id == campaign_id)
        due = (select(m.c.id).where(m.c.state == "queued", m.c.next_attempt_at <= now, free,
                                    m.c.campaign_id.in_(sending))
               .order_by(m.c.next_attempt_at, m.c.id).limit(limit))
        leased = {"lease_owner": owner, "lease_until": now + lease}
        cols = (m.c.id, m.c.campaign_id, m.c.segment_key, m.c.customer_ref, m.c.phone_key,
                m.c.attempts)
        if self._returning:
            if self._sqlite:  # one writer at a time: the subquery runs once
                taken: list[ColumnElement[bool]] = [m.c.id.in_(due.scalar_subquery()),
                                                    m.c.state == "queued", free]
            else:
                # Concurrent workers skip each other's rows instead of waiting for them. A
                # CTE, not ``IN (subquery)``: PostgreSQL may run a locking subquery once
                # per row of a semi-join, and then its LIMIT no longer limits. The rows
                # are locked, so the CTE's conditions still hold; repeating them here
                # would let a planner without statistics (a campaign just queued) join
                # every queued row with every picked one.
                picked = due.with_for_update(skip_locked=True).cte("due")
                taken = [m.c.id == picked.c.id]
            with self.write() as conn:
                rows = list(conn.execute(update(m).where(*taken).values(**leased)
                                         .returning(*cols)))
            return sorted((ClaimedMessage(r.id, r.campaign_id, r.segment_key, r.customer_ref,
                                          r.phone_key, r.attempts) for r in rows),
                          key=lambda x: x.id)
        with self.write() as conn:
            ids = list(conn.execute(due).scalars())
            if not ids:
                return []
            conn.execute(update(m).where(m.c.id.in_(ids), m.c.state == "queued", free)
                         .values(**leased))
        with self.engine.connect() as conn:
            return [ClaimedMessage(r.id, r.campaign_id, r.segment_key, r.customer_ref,
                                   r.phone_key, r.attempts)
                    for r in conn.execute(select(*cols)
                                          .where(m.c.id.in_(ids), m.c.lease_owner == owner,
                                                 m.c.state == "queued")
                                          .order_by(m.c.id))]

    def settle(self, owner: str, *, skips: Sequence[tuple[int, str]],
               holds: Sequence[tuple[int, datetime, str]], now: datetime) -> None:
        """Skip (final) or hold (until a time) claimed messages the rules stopped."""
        if not skips and not holds:
            return
        m = self.t.messages
        with self.write() as conn:
            if skips:
                conn.execute(update(m).where(m.c.id == bindparam("b_id"),
                                             m.c.lease_owner == owner, m.c.state == "queued")
                             .values(state="skipped", reason=bindparam("b_reason"),
                                     lease_owner=None, lease_until=None, updated_at=now),
                             [{"b_id": i, "b_reason": r[:255]} for i, r in skips])
            if holds:
                conn.execute(update(m).where(m.c.id == bindparam("b_id"),
                                             m.c.lease_owner == owner, m.c.state == "queued")
                             .values(next_attempt_at=bindparam("b_until"),
                                     reason=bindparam("b_reason"), lease_owner=None,
                                     lease_until=None, updated_at=now),
                             [{"b_id": i, "b_until": u, "b_reason": r[:255]}
                              for i, u, r in holds])

    def begin_attempts(self, owner: str, messages: Sequence[ClaimedMessage],
                       encodings: Mapping[int, tuple[str, int]], *, now: datetime) -> set[int]:
        """Mark claimed messages ``sending`` (attempt + 1) — committed before the gateway
        is called, so a crash leaves evidence that an attempt may have been made. Returns
        the ids marked (a message whose lease was lost meanwhile is not).

        One ``UPDATE … WHERE id IN (…)`` per (attempt, encoding, parts): a batch is one or a
        few statements, not one per message.
        """
        if not messages:
            return set()
        m = self.t.messages
        groups: dict[tuple[int, str | None, int | None], list[int]] = defaultdict(list)
        for x in messages:
            encoding, n_parts = encodings.get(x.id, ("", 0))
            groups[(x.attempts, encoding or None, n_parts or None)].append(x.id)
        marked: set[int] = set()
        with self.write() as conn:
            for (old, enc, parts), ids in groups.items():
                for chunk in _chunks(sorted(ids)):
                    stmt = (update(m).where(m.c.id.in_(list(chunk)), m.c.lease_owner == owner,
                                            m.c.state == "queued", m.c.attempts == old)
                            .values(state="sending", attempts=old + 1, attempt_at=now,
                                    reason=None, encoding=enc, parts=parts, updated_at=now))
                    if self._returning:
                        marked.update(conn.execute(stmt.returning(m.c.id)).scalars())
                    else:
                        conn.execute(stmt)
        if self._returning:
            return marked
        expected = {x.id: x.attempts + 1 for x in messages}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(expected)):
                for mid, att in conn.execute(select(m.c.id, m.c.attempts).where(
                        m.c.id.in_(list(chunk)), m.c.lease_owner == owner,
                        m.c.state == "sending")):
                    if expected[mid] == att:
                        marked.add(mid)
        return marked

    def _write_retrying(self, work: Callable[[Connection], _T], attempts: int = 5) -> _T:
        """Run ``work`` in a write transaction, again if the database broke a deadlock
        (PostgreSQL 40P01, MariaDB 1213) — the engine and the report writer update the same
        rows from two processes."""
        for attempt in range(attempts):
            try:
                with self.write() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if attempt == attempts - 1 or not _is_deadlock(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def record_outcomes(self, outcomes: Sequence[Outcome], *, retry: RetryPolicy,
                        now: datetime, down_until: datetime | None = None) -> None:
        """Write what the gateway said about a batch of attempts (one transaction).

        ``IN_DOUBT`` outcomes stay ``sending`` with their lease ended (this worker is done
        with them): :meth:`reconcile` decides after the grace period whether a delivery
        report proved them sent. Accepted and
        delivered messages are written with one statement per attempt number.
        """
        if not outcomes:
            return
        m = self.t.messages
        plain: dict[tuple[str, int], list[int]] = defaultdict(list)
        by: dict[str, list[dict[str, Any]]] = defaultdict(list)
        retried = [o.message_id for o in outcomes if o.status == SendStatus.RETRY]
        bases: dict[int, int] = {}
        if retried:
            with self.engine.connect() as conn:
                for chunk in _chunks(retried):
                    bases.update((int(i), int(b)) for i, b in conn.execute(
                        select(m.c.id, m.c.attempt_base).where(m.c.id.in_(list(chunk)))))
        for o in sorted(outcomes, key=lambda o: o.message_id):
            detail = o.detail[:200]
            p = {"b_id": o.message_id, "b_att": o.attempt}
            if o.status == SendStatus.ACCEPTED:
                plain[("sent", o.attempt)].append(o.message_id)
            elif o.status == SendStatus.DELIVERED:
                plain[("delivered", o.attempt)].append(o.message_id)
            elif o.status == SendStatus.FAILED:
                by["failed"].append({**p, "b_reason": f"refused: {detail}"[:255]})
            elif o.status == SendStatus.DOWN:
                by["down"].append({**p, "b_until": down_until or now,
                                   "b_reason": f"gateway down: {detail}"[:255]})
            elif o.status == SendStatus.RETRY:
                used = o.attempt - bases.get(o.message_id, 0)
                if retry.exhausted(used):
                    by["failed"].append({**p, "b_reason": (
                        f"gave up after {used} attempts: {detail}")[:255]})
                else:
                    by["retry"].append({**p, "b_until": now + retry.delay(used),
                                        "b_reason": f"retrying: {detail}"[:255]})
            elif o.status == SendStatus.IN_DOUBT:
                by["doubt"].append({**p, "b_reason": f"in doubt: {detail}"[:255]})
        inflight = and_(m.c.id == bindparam("b_id"), m.c.state == "sending",
                        m.c.attempts == bindparam("b_att"))
        released = {"lease_owner": None, "lease_until": None, "updated_at": now}

        def work(conn: Connection) -> None:
            for (state, attempt), ids in sorted(plain.items()):
                extra = {"delivered_at": now} if state == "delivered" else {}
                for chunk in _chunks(ids):
                    conn.execute(update(m).where(m.c.id.in_(list(chunk)),
                                                 m.c.state == "sending",
                                                 m.c.attempts == attempt)
                                 .values(state=state, sent_at=now, reason=None, **extra,
                                         **released))
            if by["failed"]:
                conn.execute(update(m).where(inflight).values(
                    state="failed", reason=bindparam("b_reason"), **released), by["failed"])
            if by["retry"]:
                conn.execute(update(m).where(inflight).values(
                    state="queued", next_attempt_at=bindparam("b_until"),
                    reason=bindparam("b_reason"), **released), by["retry"])
            if by["down"]:
                # Nothing reached the gateway: the attempt does not count.
                conn.execute(update(m).where(inflight).values(
                    state="queued", attempts=m.c.attempts - 1,
                    next_attempt_at=bindparam("b_until"), reason=bindparam("b_reason"),
                    **released), by["down"])
            if by["doubt"]:
                conn.execute(update(m).where(inflight).values(
                    reason=bindparam("b_reason"), lease_until=now, updated_at=now),
                    by["doubt"])

        self._write_retrying(work)

    def record_delivery_report(self, message_id: int, attempt: int, status: int, *,
                               retry: RetryPolicy, now: datetime | None = None) -> str:
        """Apply a delivery report to a message; returns the message's resulting state, or
        ``"ignored"`` (unknown message, stale attempt, or nothing to change).

        1 delivered → ``delivered``; 2 undelivered → ``failed``; 4 buffered and 8 submitted →
        ``sent``; 16 rejected by the SMSC (nothing went out) → ``queued`` for a retry with
        backoff, or ``failed`` once the attempts are used up.
        """
        return self.record_delivery_reports([(message_id, attempt, status)], retry=retry,
                                            now=now)[0]

    def record_delivery_reports(self, reports: Sequence[tuple[int, int, int]], *,
                                retry: RetryPolicy, now: datetime | None = None) -> list[str]:
        """Apply several ``(message id, attempt, status)`` reports in one transaction (in
        order); returns each one's result as :meth:`record_delivery_report` does.

        Grouped: one read of the messages concerned, one ``UPDATE`` per (state before,
        state after, attempt) and one multi-row ``INSERT`` of the reports — not three
        statements per report. A message changed meanwhile by the sending worker (another
        process on PostgreSQL or MariaDB) is applied again on its own.
        """
        if not reports:
            return []
        now = now or utcnow()
        return self._write_retrying(lambda conn: self._apply_reports(conn, reports, retry,
                                                                     now))

    def _apply_reports(self, conn: Connection, reports: Sequence[tuple[int, int, int]],
                       retry: RetryPolicy, now: datetime) -> list[str]:
        m, r, c = self.t.messages, self.t.reports, self.t.campaigns
        ids = sorted({mid for mid, _a, _s in reports})
        rows: dict[int, Any] = {}
        for chunk in _chunks(ids):
            for found in conn.execute(select(m.c.id, m.c.state, m.c.attempts,
                                             m.c.attempt_base, m.c.campaign_id)
                                      .where(m.c.id.in_(list(chunk)))):
                rows[found.id] = found
        state = {mid: found.state for mid, found in rows.items()}
        changes: dict[int, dict[str, Any]] = {}
        allowed: dict[int, tuple[str, ...]] = {}
        results: list[str] = []
        applied: list[bool] = []
        for mid, attempt, status in reports:
            row = rows.get(mid)
            step = None if row is None or row.attempts != attempt else _dlr_step(
                state[mid], status, attempt - row.attempt_base, retry, now)
            if step is None:
                results.append("ignored")
                applied.append(False)
                continue
            state[mid] = step[0]
            changes.setdefault(mid, {}).update(step[1])
            # The last report decides which states the change may apply to: a message the
            # sending worker has meanwhile moved from "sending" to "sent" still takes a
            # "delivered" report; one moved elsewhere is applied again on its own below.
            allowed[mid] = step[2]
            results.append(step[0])
            applied.append(True)
        groups: dict[tuple[tuple[str, ...], str, int, tuple[tuple[str, Any], ...]],
                     list[int]] = defaultdict(list)
        for mid, change in changes.items():
            groups[(allowed[mid], state[mid], rows[mid].attempts,
                    tuple(sorted(change.items())))].append(mid)
        raced: list[int] = []
        for (before, after, attempt, pairs), group in sorted(groups.items(),
                                                            key=lambda g: g[1][0]):
            sql_values = {k: (func.coalesce(m.c[k], now) if v is _COALESCE_NOW else v)
                          for k, v in pairs}
            res = conn.execute(update(m).where(m.c.id.in_(group), m.c.state.in_(before),
                                               m.c.attempts == attempt)
                               .values(state=after, updated_at=now, **sql_values))
            if (res.rowcount or 0) != len(group):
                raced.extend(group)
        if raced:  # the worker changed some of them meanwhile: one by one, freshly read
            again = set(raced)
            for i, (mid, attempt, status) in enumerate(reports):
                if mid in again:
                    results[i] = self._apply_one(conn, mid, attempt, status, retry, now)
                    applied[i] = results[i] != "ignored"
        inserts = [{"message_id": mid, "attempt": attempt, "status": status,
                    "applied": ok, "at": now}
                   for (mid, attempt, status), ok in zip(reports, applied, strict=True)
                   if mid in rows]
        if inserts:
            conn.execute(insert(r), inserts)
        final = {mid: results[i] for i, (mid, _a, _s) in enumerate(reports)
                 if results[i] != "ignored"}
        requeued = {rows[mid].campaign_id for mid, st in final.items() if st == "queued"}
        failed = {rows[mid].campaign_id for mid, st in final.items() if st == "failed"}
        if requeued:  # a retry for a finished campaign reopens it
            conn.execute(update(c).where(c.c.id.in_(sorted(requeued)),
                                         c.c.status.in_(REOPENABLE_STATES))
                         .values(status="sending", finished_at=None))
        if failed:    # a late failure report: the campaign did not complete without one
            conn.execute(update(c).where(c.c.id.in_(sorted(failed)),
                                         c.c.status == "completed")
                         .values(status="completed_with_failures"))
        return results

    def _apply_one(self, conn: Connection, message_id: int, attempt: int, status: int,
                   retry: RetryPolicy, now: datetime) -> str:
        m = self.t.messages
        row = conn.execute(select(m.c.state, m.c.attempts, m.c.attempt_base)
                           .where(m.c.id == message_id)).first()
        if row is None or row.attempts != attempt:
            return "ignored"
        step = _dlr_step(row.state, status, attempt - row.attempt_base, retry, now)
        if step is None:
            return "ignored"
        values = {k: (func.coalesce(m.c[k], now) if v is _COALESCE_NOW else v)
                  for k, v in step[1].items()}
        res = conn.execute(update(m).where(m.c.id == message_id, m.c.attempts == attempt,
                                           m.c.state == row.state)
                           .values(state=step[0], updated_at=now, **values))
        return step[0] if res.rowcount else "ignored"

    def reconcile(self, *, now: datetime, grace: timedelta,
                  campaign_id: int | None = None) -> int:
        """Requeue messages stuck in ``sending`` whose lease expired and whose attempt began
        more than ``grace`` ago without any delivery report proving it went out.

        Such a message's worker died (or its gateway answer was lost); a report for it would
        already have moved it to ``sent``. Returns how many were requeued.
        """
        m = self.t.messages
        cond = [m.c.state == "sending", m.c.lease_until < now, m.c.attempt_at <= now - grace]
        if campaign_id is not None:
            cond.append(m.c.campaign_id == campaign_id)
        with self.engine.connect() as conn:  # a read first: usually there is nothing to do
            if conn.execute(select(m.c.id).where(*cond).limit(1)).first() is None:
                return 0
        with self.write() as conn:
            res = conn.execute(update(m).where(*cond).values(
                state="queued", next_attempt_at=now, lease_owner=None, lease_until=None,
                reason="requeued: the outcome of the last attempt is unknown",
                updated_at=now))
        return int(res.rowcount or 0)

    def skip_queued(self, campaign_id: int, reason: str, *,
                    now: datetime | None = None) -> int:
        """Skip every still-queued message of a campaign (cancellation); returns how many."""
        m = self.t.messages
        now = now or utcnow()
        with self.write() as conn:
            res = conn.execute(update(m).where(m.c.campaign_id == campaign_id,
                                               m.c.state == "queued")
                               .values(state="skipped", reason=reason[:255], lease_owner=None,
                                       lease_until=None, updated_at=now))
        return int(res.rowcount or 0)

    def retry_failed(self, campaign_id: int, *, now: datetime | None = None,
                     reason: str = "retry requested") -> int:
        """Queue a campaign's failed messages again — the same rows, so the same
        idempotency keys: a customer cannot get a second message row, and a message that
        did not fail is not touched. The retry limit counts from here; a finished campaign
        is reopened. Returns how many messages were queued again."""
        m, c = self.t.messages, self.t.campaigns
        now = now or utcnow()
        with self.write() as conn:
            res = conn.execute(update(m).where(m.c.campaign_id == campaign_id,
                                               m.c.state == "failed")
                               .values(state="queued", next_attempt_at=now,
                                       attempt_base=m.c.attempts, reason=reason[:255],
                                       lease_owner=None, lease_until=None, updated_at=now))
            n = int(res.rowcount or 0)
            if n:
                conn.execute(update(c).where(c.c.id == campaign_id,
                                             c.c.status.in_(REOPENABLE_STATES))
                             .values(status="sending", finished_at=None))
        return n

    def release_holds(self, campaign_id: int, *, now: datetime) -> int:
        """Make every message held for quiet hours due now, so the rules in force decide
        again (quiet hours changed or switched off since). Returns how many."""
        m = self.t.messages
        with self.write() as conn:
            res = conn.execute(update(m).where(m.c.campaign_id == campaign_id,
                                               m.c.state == "queued",
                                               m.c.reason == "quiet hours",
                                               m.c.next_attempt_at > now)
                               .values(next_attempt_at=now, updated_at=now))
        return int(res.rowcount or 0)

    def waiting(self, campaign_id: int, *, now: datetime,
                limit: int = 4) -> list[tuple[datetime, str, int]]:
        """Queued messages not due yet: ``(due time, reason, count)``, earliest first —
        e.g. ``(08:00 UTC+8, "quiet hours", 527)``. Retries waiting for their backoff are
        grouped under their earliest time."""
        m = self.t.messages
        base = (m.c.campaign_id == campaign_id, m.c.state == "queued",
                m.c.next_attempt_at > now)
        out: list[tuple[datetime, str, int]] = []
        with self.engine.connect() as conn:
            for due, n in conn.execute(
                    select(m.c.next_attempt_at, func.count()).where(
                        *base, m.c.reason == "quiet hours")
                    .group_by(m.c.next_attempt_at).order_by(m.c.next_attempt_at)
                    .limit(limit)):
                out.append((_aware(due), "quiet hours", int(n)))
            first, n = conn.execute(select(func.min(m.c.next_attempt_at), func.count()).where(
                *base, or_(m.c.reason.is_(None), m.c.reason != "quiet hours"))).one()
            if n:
                out.append((_aware(first), "retry", int(n)))
        return sorted(out)

    def work_left(self, campaign_id: int, *, now: datetime,
                  reports_since: datetime | None = None) -> tuple[int, datetime | None]:
        """(messages queued or in flight, when the earliest queued one is due).

        With ``reports_since``, messages sent since then count as in flight too: their
        delivery report (which may be a rejection to retry) is still awaited.
        """
        m = self.t.messages
        busy: ColumnElement[bool] = m.c.state.in_(["queued", "sending"])
        if reports_since is not None:
            busy = or_(busy, and_(m.c.state == "sent", m.c.sent_at >= reports_since))
        with self.engine.connect() as conn:
            n, due = conn.execute(
                select(func.count(), func.min(case((m.c.state == "queued",
                                                    m.c.next_attempt_at))))
                .where(m.c.campaign_id == campaign_id, busy)).one()
        return int(n), (None if due is None else _aware(due))

    def sending_campaigns(self) -> list[int]:
        """Ids of the campaigns whose status is ``sending``."""
        c = self.t.campaigns
        with self.engine.connect() as conn:
            return list(conn.execute(select(c.c.id).where(c.c.status == "sending")
                                     .order_by(c.c.id)).scalars())

    def outcome(self, campaign_id: int) -> str:
        """How a campaign with nothing left to send ended: ``completed`` (no failure),
        ``failed`` (failures and nothing reached a phone) or ``completed_with_failures``."""
        counts = self.state_counts(campaign_id)
        reached = counts.get("sent", 0) + counts.get("delivered", 0)
        if not counts.get("failed", 0):
            return "completed"
        return "completed_with_failures" if reached else "failed"

    def finish_if_done(self, campaign_id: int, *, now: datetime,
                       reports_since: datetime | None = None) -> bool:
        """When nothing is queued or in flight, end a sending campaign with the status that
        says how it went (:meth:`outcome`)."""
        left, _ = self.work_left(campaign_id, now=now, reports_since=reports_since)
        if left:
            return False
        return self.transition_campaign(campaign_id, self.outcome(campaign_id),
                                        allowed_from=("sending",), now=now)

    def cancel(self, campaign_id: int, *, allowed_from: Iterable[str],
               now: datetime | None = None,
               reason: str = "campaign cancelled") -> str | None:
        """Cancel a campaign: queued messages are skipped; the campaign ends ``cancelled``
        if nothing went out, else ``partly_sent``. Returns the new status (``None``: the
        campaign was not in one of ``allowed_from``)."""
        now = now or utcnow()
        allowed = list(allowed_from)
        if not self.transition_campaign(campaign_id, "cancelled", allowed_from=allowed,
                                        now=now):
            return None
        self.skip_queued(campaign_id, reason, now=now)
        counts = self.state_counts(campaign_id)
        if counts.get("sent", 0) + counts.get("delivered", 0) + counts.get("sending", 0) \
                + counts.get("failed", 0):
            self.transition_campaign(campaign_id, "partly_sent", allowed_from=["cancelled"],
                                     now=now)
            return "partly_sent"
        return "cancelled"

    # ------------------------------------------------------------------ rules data
    def suppression_kinds(self, phone_keys: Iterable[str]) -> dict[str, set[str]]:
        """For each number that is opted out or suppressed, the kinds that apply."""
        s = self.t.suppressions
        keys = sorted(set(phone_keys))
        out: dict[str, set[str]] = defaultdict(set)
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
                for k, kind in conn.execute(select(s.c.phone_key, s.c.kind)
                                            .where(s.c.phone_key.in_(list(chunk)))):
                    out[k].add(kind)
        return dict(out)

    def recent_sends(self, phone_keys: Iterable[str], *, since: datetime,
                     exclude_ids: Iterable[int] = ()) -> dict[str, int]:
        """Messages sent (or being sent) to each number since ``since``, any campaign."""
        m = self.t.messages
        keys = sorted(set(phone_keys))
        excl = list(exclude_ids)
        out: dict[str, int] = {}
        recent = or_(m.c.sent_at >= since,
                     and_(m.c.state == "sending", m.c.attempt_at >= since))
        with self.engine.connect() as conn:
            for chunk in _chunks(keys):
                q = (select(m.c.phone_key, func.count()).where(
                    m.c.phone_key.in_(list(chunk)), recent).group_by(m.c.phone_key))
                if excl:
                    q = q.where(m.c.id.not_in(excl))
                out.update({k: int(n) for k, n in conn.execute(q)})
        return out

    def add_suppression(self, phone_key: str, kind: str, *, source: str,
                        note: str | None = None, now: datetime | None = None) -> bool:
        """Opt a number out (``kind="opt_out"``) or suppress it; ``False`` if it already was.

        ``source`` says who asked: ``mo:<keyword>`` (the customer, by SMS) or
        ``admin:<user>``; ``note`` the reason given."""
        if kind not in SUPPRESSION_KINDS:
            raise ParameterError(f"suppression kind must be one of {SUPPRESSION_KINDS}")
        s = self.t.suppressions
        try:
            with self.write() as conn:
                conn.execute(insert(s).values(phone_key=phone_key, kind=kind,
                                              source=source[:48], note=(note or None) and
                                              note[:255], created_at=now or utcnow()))
        except IntegrityError:
            return False
        return True

    def remove_suppression(self, phone_key: str, kind: str) -> bool:
        """Lift an opt-out or suppression; ``False`` if there was none. Whether the caller
        may lift it (a customer's own opt-out only by the customer) is the caller's rule:
        see :meth:`suppression_records`."""
        s = self.t.suppressions
        with self.write() as conn:
            res = conn.execute(delete(s).where(s.c.phone_key == phone_key, s.c.kind == kind))
        return bool(res.rowcount)

    def suppression_records(self, phone_key: str) -> dict[str, SuppressionRecord]:
        """The opt-out and suppression entries of one number, by kind."""
        s = self.t.suppressions
        with self.engine.connect() as conn:
            return {row.kind: SuppressionRecord(row.kind, row.source, row.note,
                                                _aware(row.created_at))
                    for row in conn.execute(select(s).where(s.c.phone_key == phone_key))}

    def suppression_counts(self) -> dict[str, int]:
        """How many numbers are opted out / suppressed."""
        s = self.t.suppressions
        with self.engine.connect() as conn:
            return {k: int(n) for k, n in conn.execute(
                select(s.c.kind, func.count()).group_by(s.c.kind))}

    # ------------------------------------------------------------------ reports
    def state_counts(self, campaign_id: int) -> dict[str, int]:
        """Messages of a campaign by state."""
        m = self.t.messages
        with self.engine.connect() as conn:
            return {st: int(n) for st, n in conn.execute(
                select(m.c.state, func.count()).where(m.c.campaign_id == campaign_id)
                .group_by(m.c.state))}

    def report(self, campaign_id: int, *, now: datetime | None = None) -> CampaignReport:
        """Per segment: members, unreachable (by reason), audience, holdout, queued, held
        (quiet hours), sent, delivered, failed (by reason), skipped at send time (by
        reason) and opted out since (see :class:`SegmentReport`)."""
        now = now or utcnow()
        camp = self.campaign(campaign_id)
        m, s = self.t.messages, self.t.suppressions
        reports = {seg.key: SegmentReport(seg.key, seg.name) for seg in camp.segments}
        with self.engine.connect() as conn:
            later = func.sum(case((m.c.next_attempt_at > now, 1), else_=0))
            rows = conn.execute(
                select(m.c.segment_key, m.c.state, m.c.arm, m.c.reason, later, func.count())
                .where(m.c.campaign_id == campaign_id)
                .group_by(m.c.segment_key, m.c.state, m.c.arm, m.c.reason))
            for key, state, arm, reason, n_later, n in rows:
                rep = reports.setdefault(key, SegmentReport(key, key))
                rep.members += n
                if state == "skipped" and arm is None:
                    _add(rep.unreachable_reasons, reason or "skipped", n)
                    rep.unreachable += n
                    continue
                rep.audience += n
                if state == "holdout":
                    rep.holdout += n
                elif state == "queued" and reason == "quiet hours":
                    rep.held += int(n_later or 0)
                    rep.queued += n - int(n_later or 0)
                elif state == "skipped":
                    rep.skipped += n
                    _add(rep.skipped_reasons, reason or "skipped", n)
                elif state == "failed":
                    rep.failed += n
                    _add(rep.failed_reasons, reason or "failed", n)
                else:
                    setattr(rep, state, getattr(rep, state) + n)
            opted = conn.execute(
                select(m.c.segment_key, func.count(func.distinct(m.c.id)))
                .join(s, and_(s.c.phone_key == m.c.phone_key, s.c.kind == "opt_out"))
                .where(m.c.campaign_id == campaign_id, m.c.sent_at.is_not(None),
                       s.c.created_at >= m.c.sent_at)
                .group_by(m.c.segment_key))
            for key, n in opted:
                if key in reports:
                    reports[key].opted_out += int(n)
        return CampaignReport(campaign_id, list(reports.values()))

    def delivery_times(self, campaign_id: int,
                       segment_key: str | None = None) -> list[datetime]:
        """When each delivered message of a campaign was delivered, oldest first."""
        m = self.t.messages
        q = (select(m.c.delivered_at).where(m.c.campaign_id == campaign_id,
                                            m.c.delivered_at.is_not(None))
             .order_by(m.c.delivered_at))
        if segment_key is not None:
            q = q.where(m.c.segment_key == segment_key)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())


#: Marks ``column = COALESCE(column, now)`` in a delivery-report change.
_COALESCE_NOW: Any = object()


_IN_FLIGHT = ("sending", "sent")


def _dlr_step(state: str, status: int, used: int, retry: RetryPolicy, now: datetime
              ) -> tuple[str, dict[str, Any], tuple[str, ...]] | None:
    """What a delivery report does to a message in ``state`` (``used`` attempts since the
    last manual retry): the new state, the columns it sets, and the states it applies to;
    ``None``: nothing to change."""
    if status & DLR_DELIVERED:
        return ("delivered", {"delivered_at": now, "sent_at": _COALESCE_NOW, "reason": None,
                              "lease_owner": None, "lease_until": None},
                _IN_FLIGHT) if state in _IN_FLIGHT else None
    if status & DLR_UNDELIVERED:
        return ("failed", {"reason": "not delivered to the handset (DLR 2)",
                           "sent_at": _COALESCE_NOW, "lease_owner": None,
                           "lease_until": None}, _IN_FLIGHT) if state in _IN_FLIGHT else None
    if status & DLR_REJECTED:
        if state not in _IN_FLIGHT:
            return None
        if retry.exhausted(used):
            return "failed", {"reason": f"rejected by the SMSC {used} times (DLR 16)",
                              "sent_at": None, "lease_owner": None, "lease_until": None}, \
                _IN_FLIGHT
        return "queued", {"reason": "rejected by the SMSC (DLR 16); retrying",
                          "sent_at": None, "next_attempt_at": now + retry.delay(used),
                          "lease_owner": None, "lease_until": None}, _IN_FLIGHT
    if status & (DLR_SUBMITTED | DLR_BUFFERED) and state == "sending":
        return "sent", {"sent_at": _COALESCE_NOW, "reason": None, "lease_owner": None,
                        "lease_until": None}, ("sending",)
    return None


def _add(counter: dict[str, int], key: str, n: int) -> None:
    counter[key] = counter.get(key, 0) + n


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _is_deadlock(exc: DBAPIError) -> bool:
    """Whether the database aborted the transaction to break a deadlock (or, on
    PostgreSQL, a serialisation failure): safe to run it again."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    return bool(args) and args[0] in (1213, 1205)


@dataclass(frozen=True, slots=True)
class SuppressionRecord:
    """One opt-out or suppression entry: who asked (``source``), why, and when."""

    kind: str
    source: str
    note: str | None
    created_at: datetime

    @property
    def by_customer(self) -> bool:
        """The customer asked themselves (an inbound SMS keyword)."""
        return self.source.startswith("mo:")


def new_lease_owner(worker: str) -> str:
    """A unique lease token for one claim by ``worker``."""
    return f"{worker[:27]}:{uuid.uuid4().hex}"
