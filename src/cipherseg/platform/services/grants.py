"""Releases as grants: the owner of a finished segmentation grants it to named merchants and
may revoke a grant at any time.

A merchant sees (pages, API, campaign audiences) only the segmentations granted to it and not
revoked; the operator sees the names and sizes of every segmentation granted to at least one
merchant (what it sends to). Grants and revocations are audited (``release_grant``,
``release_revoke``). Revoking calls the context's revocation listeners (the campaigns
extension stops that merchant's queued sends; sent messages stay in the reports).

The model is per job, so a joint segmentation's release is a grant by the owner who created
it, like a single owner's.

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.jobs import enqueue
>>> from cipherseg.platform.migrate import upgrade
>>> from cipherseg.platform.models import JobKind, JobStatus, Role
>>> from cipherseg.platform.services.users import create_user
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     mall = create_user(s, "mall", "a long passphrase", Role.OWNER)
...     a = create_user(s, "shop-a", "a long passphrase", Role.MERCHANT)
...     b = create_user(s, "shop-b", "a long passphrase", Role.MERCHANT)
...     job = enqueue(s, JobKind.SEGMENTATION, owner=mall, params={"k": 3})
...     job.status = JobStatus.DONE.value
...     _ = grant(s, mall, job, ["shop-a"])
...     [j.id for j in granted_jobs(s, a)] == [job.id], granted_jobs(s, b)
(True, [])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Job, JobKind, JobStatus, ReleaseGrant, Role, User

#: Kinds of job whose results can be released.
RELEASABLE_KINDS = (JobKind.SEGMENTATION, JobKind.JOINT, JobKind.JOINT_NODE,
                    JobKind.VERTICAL_NODE)


@dataclass(frozen=True)
class GrantRow:
    """A grant as the owner's pages show it."""

    merchant: str
    granted_at: str
    revoked_at: str | None
    request_id: int | None


def merchant_accounts(db: Session) -> list[User]:
    """Active merchant accounts, by name (whom an owner can grant to)."""
    return list(db.scalars(select(User).where(User.role == Role.MERCHANT.value,
                                              User.active.is_(True))
                           .order_by(User.username)))


def _merchants_by_name(db: Session, names: Sequence[str]) -> list[User]:
    wanted = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not wanted:
        raise ValidationError("choose at least one merchant to release the segmentation to")
    found = {u.username: u for u in db.scalars(select(User).where(User.username.in_(wanted)))}
    for name in wanted:
        user = found.get(name)
        if user is None or user.role != Role.MERCHANT.value:
            raise ValidationError(f"there is no merchant account called {name!r}")
        if not user.active:
            raise ValidationError(f"the merchant account {name!r} is disabled")
    return [found[n] for n in wanted]


def grant(db: Session, owner: User, job: Job, merchants: Sequence[str], *,
          request_id: int | None = None, require_done: bool = True,
          ip: str | None = None) -> list[ReleaseGrant]:
    """Grant ``job`` to the named merchants (re-granting a revoked grant renews it).

    The caller has checked that ``owner`` may release ``job``; flushes, does not commit.
    ``require_done=False`` grants a queued run in advance (an approved request).
    """
    if job.kind not in RELEASABLE_KINDS:
        raise ValidationError("only segmentations can be released")
    if require_done and job.status != JobStatus.DONE:
        raise ValidationError("only a finished segmentation can be released")
    out = []
    for merchant in _merchants_by_name(db, merchants):
        row = db.scalar(select(ReleaseGrant).where(ReleaseGrant.job_id == job.id,
                                                   ReleaseGrant.merchant_id == merchant.id))
        if row is not None and row.revoked_at is None:
            out.append(row)
            continue
        if row is None:
            row = ReleaseGrant(job_id=job.id, merchant_id=merchant.id)
            db.add(row)
        row.granted_by, row.granted_at, row.request_id = owner.id, utcnow(), request_id
        row.revoked_at = row.revoked_by = None
        audit.record(db, audit.AuditAction.RELEASE_GRANT, actor=owner, object_type="job",
                     object_id=job.id, ip=ip,
                     detail={"merchant": merchant.username, "kind": job.kind,
                             "number": job.number, "request": request_id})
        out.append(row)
    db.flush()
    return out


def revoke(ctx: PlatformContext, db: Session, owner: User, job: Job, merchant_name: str, *,
           ip: str | None = None) -> ReleaseGrant:
    """Revoke the grant of ``job`` to ``merchant_name`` (commits), then let the context's
    revocation listeners stop what depended on it. Raises :class:`LookupError` if there is
    no active grant. The campaign code also checks the grant itself before and while it
    sends, so a listener that did not run (a crash right after the commit) stops nothing
    that would otherwise go out."""
    merchant = db.scalar(select(User).where(User.username == merchant_name))
    row = None if merchant is None else db.scalar(
        select(ReleaseGrant).where(ReleaseGrant.job_id == job.id,
                                   ReleaseGrant.merchant_id == merchant.id,
                                   ReleaseGrant.revoked_at.is_(None)))
    if row is None or merchant is None:
        raise LookupError(merchant_name)
    row.revoked_at, row.revoked_by = utcnow(), owner.id
    audit.record(db, audit.AuditAction.RELEASE_REVOKE, actor=owner, object_type="job",
                 object_id=job.id, ip=ip,
                 detail={"merchant": merchant.username, "kind": job.kind,
                         "number": job.number})
    db.commit()
    # after the commit: listeners write through other connections (the message store),
    # which SQLite would make wait for this transaction's lock
    for listener in ctx.revocation_listeners:
        listener(ctx, db, job.id, merchant)
    db.commit()
    return row


def is_granted(db: Session, job_id: int, merchant: User) -> bool:
    """Whether ``job_id`` is released to ``merchant`` now (active grant, finished job)."""
    return db.scalar(select(ReleaseGrant.id).join(Job, Job.id == ReleaseGrant.job_id).where(
        ReleaseGrant.job_id == job_id, ReleaseGrant.merchant_id == merchant.id,
        ReleaseGrant.revoked_at.is_(None), Job.status == JobStatus.DONE.value)) is not None


def granted_jobs(db: Session, merchant: User, *, kinds: Sequence[str] = RELEASABLE_KINDS,
                 limit: int = 50) -> list[Job]:
    """Finished jobs granted to ``merchant`` and not revoked, newest grant first."""
    return list(db.scalars(
        select(Job).join(ReleaseGrant, ReleaseGrant.job_id == Job.id).where(
            ReleaseGrant.merchant_id == merchant.id, ReleaseGrant.revoked_at.is_(None),
            Job.status == JobStatus.DONE.value, Job.kind.in_([JobKind(k).value for k in kinds]))
        .order_by(ReleaseGrant.granted_at.desc(), Job.id.desc()).limit(limit)))


def granted_dates(db: Session, merchant: User, job_ids: Sequence[int]) -> dict[int, datetime]:
    """When each of ``job_ids`` was (last) granted to ``merchant``."""
    return {job_id: at for job_id, at in db.execute(
        select(ReleaseGrant.job_id, ReleaseGrant.granted_at).where(
            ReleaseGrant.merchant_id == merchant.id, ReleaseGrant.job_id.in_(list(job_ids))))}


def released_jobs(db: Session, *, kinds: Sequence[str] = RELEASABLE_KINDS,
                  limit: int = 50) -> list[Job]:
    """Finished jobs granted to at least one merchant (the operator's audiences)."""
    active = select(ReleaseGrant.job_id).where(ReleaseGrant.revoked_at.is_(None))
    return list(db.scalars(select(Job).where(Job.id.in_(active), Job.status == JobStatus.DONE.value,
                                             Job.kind.in_([JobKind(k).value for k in kinds]))
                           .order_by(Job.id.desc()).limit(limit)))


def grantees(db: Session, job_id: int) -> list[str]:
    """Names of the merchants ``job_id`` is granted to now."""
    return list(db.scalars(select(User.username).join(
        ReleaseGrant, ReleaseGrant.merchant_id == User.id).where(
        ReleaseGrant.job_id == job_id, ReleaseGrant.revoked_at.is_(None))
        .order_by(User.username)))


def grant_rows(db: Session, job_id: int) -> list[GrantRow]:
    """Every grant of ``job_id``, active and revoked (the owner's overview)."""
    rows = db.execute(select(ReleaseGrant, User.username).join(
        User, User.id == ReleaseGrant.merchant_id).where(ReleaseGrant.job_id == job_id)
        .order_by(ReleaseGrant.revoked_at.is_not(None), User.username)).all()
    return [GrantRow(name, g.granted_at.strftime("%Y-%m-%d %H:%M"),
                     g.revoked_at.strftime("%Y-%m-%d %H:%M") if g.revoked_at else None,
                     g.request_id) for g, name in rows]


def data_owner_ids(job: Job) -> list[int]:
    """The data owners whose customers a segmentation holds: its owner, or every
    participant of a joint segmentation."""
    if job.kind == JobKind.JOINT:
        return [int(i) for i in job.params.get("participants", [job.owner_id])]
    return [job.owner_id]


def owners_label(db: Session, job: Job) -> str:
    """Who the customers of ``job`` belong to, in words ("mall" or "mall, mall2 (joint)")."""
    ids = data_owner_ids(job)
    names = dict(db.execute(select(User.id, User.username).where(User.id.in_(ids))).all())
    label = ", ".join(names.get(i, "?") for i in ids)
    return f"{label} (joint)" if job.kind == JobKind.JOINT else label
