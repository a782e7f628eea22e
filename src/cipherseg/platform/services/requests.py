"""Segmentation requests: a merchant asks a data owner for a segmentation; the owner approves
(the run is queued and its release granted to that merchant in advance: the merchant sees it
as soon as it finishes) or declines with a reason. Both see the status; the operator sees
counts only.

What a request carries: its purpose (free text the owner reads), k or "choose for me", an
optional time window (from/to dates or the last N days) and the features. All of them are
passed to the segmentation job (:func:`job_arguments`): the window selects the purchases and
recency counts from its end; "choose for me" runs k = 2 to 8 through the encrypted protocol
and keeps the recommended k (unless the owner names a k when approving). The request keeps
what was asked, so the owner and the merchant see it.

>>> RequestForm(owner="mall", purpose="spring sale", k=None, window_days=90,
...             features=["recency"]).window_label()
'last 90 days'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import (
    JOB_PENDING,
    Job,
    JobStatus,
    ReleaseGrant,
    RequestStatus,
    Role,
    RolePermission,
    SegmentationRequest,
    User,
)
from cipherseg.platform.permissions import Permission
from cipherseg.platform.services import grants

MAX_TEXT = 500
MAX_WINDOW_DAYS = 3650
EARLIEST = date(1970, 1, 1)


@dataclass
class RequestForm:
    """What a merchant fills in (validated by :meth:`validate`)."""

    owner: str
    purpose: str
    k: int | None
    features: list[str] = field(default_factory=list)
    window_from: date | None = None
    window_to: date | None = None
    window_days: int | None = None

    def window_label(self) -> str:
        return window_label(self.window_from, self.window_to, self.window_days)

    def validate(self, *, max_k: int, features: Sequence[str], today: date) -> None:
        """Raise :class:`ValidationError` saying in words what is wrong."""
        self.purpose = self.purpose.strip()
        if not self.purpose:
            raise ValidationError("say what the segmentation is for (the data owner reads "
                                  "this before deciding)")
        if len(self.purpose) > MAX_TEXT:
            raise ValidationError(f"the purpose is longer than {MAX_TEXT} characters; "
                                  "shorten it")
        if self.k is not None and not 2 <= self.k <= max_k:
            raise ValidationError(f"the number of segments must be between 2 and {max_k}, "
                                  "or choose 'let the data owner's run choose'")
        if self.features and not set(self.features) & {"recency", "frequency", "monetary"}:
            raise ValidationError("choose at least one of recency, frequency and monetary "
                                  "(category shares alone do not make segments)")
        unknown = [f for f in self.features if f not in features]
        if unknown:
            raise ValidationError(f"unknown feature {unknown[0]!r}; choose among "
                                  f"{', '.join(features)}")
        if not self.features:
            raise ValidationError("choose at least one feature")
        self.features = [f for f in features if f in set(self.features)]
        if self.window_days is not None and (self.window_from or self.window_to):
            raise ValidationError("give either a date range or a number of days, not both")
        if self.window_days is not None and not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise ValidationError(f"the number of days must be between 1 and "
                                  f"{MAX_WINDOW_DAYS}")
        for label, d in (("start", self.window_from), ("end", self.window_to)):
            if d is not None and not EARLIEST <= d <= today:
                raise ValidationError(f"the window's {label} date must be between "
                                      f"{EARLIEST} and today ({today})")
        if self.window_from and self.window_to and self.window_from > self.window_to:
            raise ValidationError("the window's start date is after its end date")


def window_label(start: date | None, end: date | None, days: int | None) -> str:
    """A time window in words."""
    if days is not None:
        return f"last {days} days"
    if start and end:
        return f"{start} to {end}"
    if start:
        return f"from {start}"
    if end:
        return f"until {end}"
    return "all history"


def owners_accepting_requests(db: Session) -> list[User]:
    """Active data owner accounts whose role may decide requests."""
    if db.scalar(select(RolePermission.role).where(
            RolePermission.role == Role.OWNER.value,
            RolePermission.permission == Permission.REQUEST_DECIDE.value)) is None:
        return []
    return list(db.scalars(select(User).where(User.role == Role.OWNER.value,
                                              User.active.is_(True))
                           .order_by(User.username)))


def create(ctx: PlatformContext, db: Session, merchant: User, form: RequestForm, *,
           features: Sequence[str], ip: str | None = None) -> SegmentationRequest:
    """Validate and store a merchant's request (commits)."""
    form.validate(max_k=ctx.settings.max_k, features=features, today=utcnow().date())
    owner = next((u for u in owners_accepting_requests(db) if u.username == form.owner), None)
    if owner is None:
        raise ValidationError("choose the data owner to ask (an active data owner account)")
    req = SegmentationRequest(
        merchant_id=merchant.id, owner_id=owner.id, purpose=form.purpose, k=form.k,
        window_from=form.window_from, window_to=form.window_to, window_days=form.window_days,
        features=form.features, status=RequestStatus.PENDING.value)
    db.add(req)
    db.flush()
    audit.record(db, audit.AuditAction.REQUEST_CREATE, actor=merchant, object_type="request",
                 object_id=req.id, ip=ip,
                 detail={"owner": owner.username, "k": form.k or "choose",
                         "window": form.window_label(), "features": form.features})
    db.commit()
    return req


def job_arguments(req: SegmentationRequest, *, k: int | None) -> dict[str, Any]:
    """The segmentation job's arguments for an approved request: its features, its time
    window (recency counted from the window's end) and k — the merchant's, else the owner's,
    else ``None``: the run chooses k (2 to 8) and keeps its measures and recommendation."""
    from cipherseg.analytics.window import TimeWindow

    window = TimeWindow(start=req.window_from, end=req.window_to, days=req.window_days)
    return {"k": req.k if req.k is not None else k, "features": list(req.features),
            "scheme": "ckks", "window": window}


def approve(ctx: PlatformContext, db: Session, owner: User, req: SegmentationRequest, *,
            k: int | None = None, ip: str | None = None) -> Job:
    """Approve a pending request: queue the run and grant its release to the merchant
    (one transaction; commits)."""
    from cipherseg.platform.services.segmentation import start_segmentation

    _check_pending(req)
    merchant = db.get(User, req.merchant_id)
    if merchant is None or not merchant.active or merchant.role != Role.MERCHANT.value:
        raise ValidationError("the merchant's account is disabled or no longer a merchant; "
                              "decline the request instead")
    job = start_segmentation(ctx, db, owner, **job_arguments(req, k=k), ip=ip,
                             request_id=req.id, commit=False)
    grants.grant(db, owner, job, [merchant.username], request_id=req.id, require_done=False,
                 ip=ip)
    req.status, req.job_id = RequestStatus.APPROVED.value, job.id
    req.decided_at, req.decided_by = utcnow(), owner.id
    audit.record(db, audit.AuditAction.REQUEST_APPROVE, actor=owner, object_type="request",
                 object_id=req.id, ip=ip,
                 detail={"merchant": merchant.username, "job": job.id,
                         "segmentation": job.number, "k": job.params.get("k")})
    db.commit()
    return job


def decline(db: Session, owner: User, req: SegmentationRequest, reason: str, *,
            ip: str | None = None) -> None:
    """Decline a pending request with a reason the merchant reads (commits)."""
    _check_pending(req)
    reason = reason.strip()
    if not reason:
        raise ValidationError("say why you decline (the merchant reads it)")
    if len(reason) > MAX_TEXT:
        raise ValidationError(f"the reason is longer than {MAX_TEXT} characters; shorten it")
    req.status, req.reason = RequestStatus.DECLINED.value, reason
    req.decided_at, req.decided_by = utcnow(), owner.id
    audit.record(db, audit.AuditAction.REQUEST_DECLINE, actor=owner, object_type="request",
                 object_id=req.id, ip=ip, detail={"reason": reason[:200]})
    db.commit()


def withdraw(db: Session, merchant: User, req: SegmentationRequest, *,
             ip: str | None = None) -> None:
    """The merchant withdraws a request the owner has not decided yet (commits)."""
    _check_pending(req)
    req.status, req.decided_at = RequestStatus.WITHDRAWN.value, utcnow()
    audit.record(db, audit.AuditAction.REQUEST_WITHDRAW, actor=merchant, object_type="request",
                 object_id=req.id, ip=ip)
    db.commit()


def _check_pending(req: SegmentationRequest) -> None:
    if req.status != RequestStatus.PENDING.value:
        raise ValidationError(f"this request was already {req.status}")


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class RequestView:
    """A request with the names and the status in words, as both parties see it."""

    req: SegmentationRequest
    merchant: str
    owner: str
    status: str
    status_label: str
    job_number: int | None
    window: str

    @property
    def id(self) -> int:
        return self.req.id


def _status(req: SegmentationRequest, job: Job | None, granted: bool) -> tuple[str, str]:
    if req.status != RequestStatus.APPROVED.value:
        return req.status, {"pending": "waiting for the data owner",
                            "declined": "declined", "withdrawn": "withdrawn"}[req.status]
    if job is None or job.status in JOB_PENDING:
        return "running", "approved · segmentation running"
    if job.status == JobStatus.FAILED:
        return "failed", "approved · the segmentation failed; the owner can run it again"
    if job.status == JobStatus.DONE and granted:
        return "released", "released to the merchant"
    return "revoked", "released, then revoked by the data owner"


def views(db: Session, requests: Sequence[SegmentationRequest]) -> list[RequestView]:
    """Display rows for ``requests``."""
    ids = {r.merchant_id for r in requests} | {r.owner_id for r in requests}
    names = dict(db.execute(select(User.id, User.username).where(User.id.in_(ids))).all())
    job_ids = [r.job_id for r in requests if r.job_id is not None]
    jobs = {j.id: j for j in db.scalars(select(Job).where(Job.id.in_(job_ids)))}
    active = {(job_id, merchant_id) for job_id, merchant_id in db.execute(
        select(ReleaseGrant.job_id, ReleaseGrant.merchant_id).where(
            ReleaseGrant.job_id.in_(job_ids), ReleaseGrant.revoked_at.is_(None)))}
    out = []
    for r in requests:
        job = jobs.get(r.job_id) if r.job_id is not None else None
        status, label = _status(r, job, (r.job_id, r.merchant_id) in active)
        out.append(RequestView(r, names.get(r.merchant_id, "?"), names.get(r.owner_id, "?"),
                               status, label, job.number if job else None,
                               window_label(r.window_from, r.window_to, r.window_days)))
    return out


def for_merchant(db: Session, merchant: User, limit: int = 100) -> list[RequestView]:
    """The merchant's own requests, newest first."""
    return views(db, list(db.scalars(select(SegmentationRequest).where(
        SegmentationRequest.merchant_id == merchant.id)
        .order_by(SegmentationRequest.id.desc()).limit(limit))))


def for_owner(db: Session, owner: User, limit: int = 100) -> list[RequestView]:
    """Requests addressed to the owner: pending first, then newest first."""
    rows = list(db.scalars(select(SegmentationRequest).where(
        SegmentationRequest.owner_id == owner.id)
        .order_by(SegmentationRequest.id.desc()).limit(limit)))
    rows.sort(key=lambda r: r.status != RequestStatus.PENDING.value)
    return views(db, rows)


def merchant_request(db: Session, merchant: User, request_id: int) -> SegmentationRequest:
    """One of the merchant's requests (:class:`LookupError` otherwise)."""
    req = db.get(SegmentationRequest, request_id)
    if req is None or req.merchant_id != merchant.id:
        raise LookupError(request_id)
    return req


def owner_request(db: Session, owner: User, request_id: int) -> SegmentationRequest:
    """A request addressed to the owner (:class:`LookupError` otherwise)."""
    req = db.get(SegmentationRequest, request_id)
    if req is None or req.owner_id != owner.id:
        raise LookupError(request_id)
    return req


def pending_count(db: Session, owner: User) -> int:
    """Requests waiting for the owner's decision."""
    return int(db.scalar(select(func.count()).select_from(SegmentationRequest).where(
        SegmentationRequest.owner_id == owner.id,
        SegmentationRequest.status == RequestStatus.PENDING.value)) or 0)


def counts(db: Session) -> dict[str, int]:
    """Requests per decision, platform-wide (all the operator sees of requests)."""
    found = dict(db.execute(select(SegmentationRequest.status, func.count())
                            .group_by(SegmentationRequest.status)).all())
    return {s.value: int(found.get(s.value, 0)) for s in RequestStatus}
