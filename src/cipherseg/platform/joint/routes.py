"""Joint segmentation's pages: the owners' list, a job's page (consent, progress, the
released model, releases and the owner's own labels) and the merchants' joint segments.
Thin: each calls :mod:`cipherseg.platform.joint.service` or the release services."""


from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.analytics.window import TimeWindow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.csv_export import csv_response
from cipherseg.platform.deps import (
    ContextDep,
    IdPath,
    JointRunner,
    PlatformContext,
    ReleaseViewer,
    SessionDep,
    client_ip,
)
from cipherseg.platform.joint.service import (
    accept_joint_job,
    accepted,
    create_joint_job,
    participants,
)
from cipherseg.platform.models import (
    Customer,
    Job,
    JobKind,
    JobStatus,
    Role,
    Segment,
    SegmentMember,
    User,
)
from cipherseg.platform.routes.common import parse_window, redirect, render
from cipherseg.platform.segments import owner_view
from cipherseg.platform.services import grants, releases
from cipherseg.platform.services import jobs as jobs_service

router = APIRouter(include_in_schema=False)


def _visible_jobs(db: Session, owner_id: int) -> list[Job]:
    jobs = db.scalars(select(Job).where(Job.kind == JobKind.JOINT.value).order_by(Job.id.desc())
                      .limit(500))
    return [j for j in jobs if owner_id in participants(j)][:50]


def _participant_job(db: Session, owner_id: int, number: int) -> Job:
    """Joint segmentation ``number`` (numbered per kind: shared by its participants)."""
    job = db.scalar(select(Job).where(Job.kind == JobKind.JOINT.value, Job.number == number))
    if job is None or owner_id not in participants(job):
        raise HTTPException(404, "no such joint segmentation")
    return job


def _names(db: Session, ids: list[int]) -> dict[int, str]:
    return {u.id: u.username for u in db.scalars(select(User).where(User.id.in_(ids)))}


def _list_page(request: Request, ctx: PlatformContext, db: Session, owner: User, *,
               status_code: int = 200, error: str | None = None,
               form: dict[str, Any] | None = None) -> Response:
    jobs = _visible_jobs(db, owner.id)
    others = list(db.scalars(select(User).where(User.role == Role.OWNER.value,
                                                User.active.is_(True), User.id != owner.id)
                             .order_by(User.username)))
    names = _names(db, sorted({i for j in jobs for i in participants(j)}))
    return render(request, ctx, "owner_joint.html", status_code=status_code, error=error,
                  jobs=jobs, others=others, names=names, me=owner.id, job=None,
                  max_k=ctx.settings.max_k, form=form or {},
                  window_labels={j.id: TimeWindow.from_dict(j.params.get("window")).label()
                                 for j in jobs})


@router.get("/owner/joint", response_class=HTMLResponse)
def joint_list(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner) -> Response:
    """Start a joint segmentation with other owners; joint jobs this owner takes part in."""
    return _list_page(request, ctx, db, owner)


@router.post("/owner/joint", response_class=HTMLResponse)
def joint_create(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                 k: Annotated[int, Form()] = 4,
                 participants_: Annotated[list[int] | None, Form(alias="participants")] = None,
                 window: Annotated[str, Form(max_length=8)] = "all",
                 window_from: Annotated[str, Form(max_length=32)] = "",
                 window_to: Annotated[str, Form(max_length=32)] = "",
                 window_days: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Create a joint job; it runs once every named owner has accepted it."""
    try:
        job = create_joint_job(db, owner, others=participants_ or [], k=k,
                               max_k=ctx.settings.max_k, ip=client_ip(request),
                               window=parse_window(window, window_from, window_to,
                                                   window_days))
    except ValidationError as exc:
        db.rollback()
        form = {"k": str(k), "window": window, "window_from": window_from,
                "window_to": window_to, "window_days": window_days}
        return _list_page(request, ctx, db, owner, status_code=400, error=str(exc), form=form)
    return redirect(f"/owner/joint/{job.number}")


@router.get("/owner/joint/{number}", response_class=HTMLResponse)
def joint_page(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
               number: IdPath) -> Response:
    """A joint job: participants and consent, status, the released model, own label count."""
    job = _participant_job(db, owner.id, number)
    segments = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    own = 0
    if job.status == JobStatus.DONE:
        from sqlalchemy import func

        own = int(db.scalar(select(func.count()).select_from(SegmentMember).join(
            Customer, Customer.id == SegmentMember.customer_id).where(
            SegmentMember.job_id == job.id, Customer.owner_id == owner.id)) or 0)
        jobs_service.record_result_view(db, owner, job, ip=client_ip(request))
    return render(request, ctx, "owner_joint.html", job=job, me=owner.id,
                  names=_names(db, participants(job)), accepted_ids=accepted(job),
                  segments=owner_view(segments) if job.status == JobStatus.DONE else [],
                  own_customers=own, jobs=[], others=[], max_k=ctx.settings.max_k,
                  window_asked=TimeWindow.from_dict(job.params.get("window")).label(),
                  grants=grants.grant_rows(db, job.id), merchants=grants.merchant_accounts(db),
                  granted=set(grants.grantees(db, job.id)))


@router.post("/owner/joint/{number}/accept", response_class=HTMLResponse)
def joint_accept(request: Request, db: SessionDep, owner: JointRunner,
                 number: IdPath) -> Response:
    """Consent to take part (the job runs once every participant has consented)."""
    job = _participant_job(db, owner.id, number)
    accept_joint_job(db, owner, job, ip=client_ip(request))
    return redirect(f"/owner/joint/{job.number}")


@router.post("/owner/joint/{number}/publish", response_class=HTMLResponse)
def joint_publish(request: Request, db: SessionDep, owner: JointRunner, number: IdPath,
                  merchants: Annotated[list[str] | None, Form(max_length=64)] = None
                  ) -> Response:
    """Release the joint model's segments to the merchants ticked (the creating owner only;
    grants, like a single owner's release)."""
    job = _participant_job(db, owner.id, number)
    try:
        releases.publish(db, owner, job, merchants or [], ip=client_ip(request))
    except releases.NotJobOwner:
        raise HTTPException(403, "only the owner who created the joint job can release it"
                            ) from None
    except ValidationError as exc:
        raise HTTPException(400, f"Not released: {exc}.") from None
    return redirect(f"/owner/joint/{job.number}?done=granted")


@router.post("/owner/joint/{number}/revoke", response_class=HTMLResponse)
def joint_revoke(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                 number: IdPath, merchant: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Revoke one merchant's grant of the joint model (the creating owner only)."""
    job = _participant_job(db, owner.id, number)
    if job.owner_id != owner.id:
        raise HTTPException(403, "only the owner who created the joint job can revoke it")
    try:
        grants.revoke(ctx, db, owner, job, merchant, ip=client_ip(request))
    except LookupError:
        raise HTTPException(404, "this segmentation is not released to that merchant") from None
    return redirect(f"/owner/joint/{job.number}?done=revoked")


@router.get("/owner/joint/{number}/labels.csv")
def joint_labels(request: Request, db: SessionDep, owner: JointRunner,
                 number: IdPath) -> Response:
    """This owner's own customers' labels (never another participant's)."""
    job = _participant_job(db, owner.id, number)
    if job.status != JobStatus.DONE:
        raise HTTPException(409, "the segmentation has not finished")
    audit.record(db, "export", actor=owner, object_type="job_labels", object_id=job.id,
                 ip=client_ip(request))
    db.commit()
    seg = dict(db.execute(select(Segment.position, Segment.name)
                          .where(Segment.job_id == job.id)).all())
    rows = db.execute(select(SegmentMember.pseudonym, SegmentMember.segment_index).join(
        Customer, Customer.id == SegmentMember.customer_id).where(
        SegmentMember.job_id == job.id, Customer.owner_id == owner.id)
        .order_by(SegmentMember.pseudonym)).all()
    return csv_response([["pseudonym", "segment", "segment_name"],
                         *([p, i, seg.get(i, "")] for p, i in rows)],
                        f"joint-{job.number}-labels.csv")


@router.get("/merchant/joint", response_class=HTMLResponse)
def merchant_joint(request: Request, ctx: ContextDep, db: SessionDep,
                   merchant: ReleaseViewer) -> Response:
    """Joint segmentations released to this merchant (segments ≥ the minimum segment size,
    with profiles)."""
    from cipherseg.platform.routes.views import merchant_releases

    min_size = ctx.settings.min_segment_size
    releases = merchant_releases(db, merchant, min_size=min_size,
                                kinds=(JobKind.JOINT, JobKind.JOINT_NODE,
                                       JobKind.VERTICAL_NODE))
    for row in releases:
        row["owner"] = ", ".join(_names(db, participants(row["job"])).values()) or \
            ", ".join(row["job"].params.get("nodes", []))  # a cross-node job (platform.nodes)
    audit.record(db, "result_view", actor=merchant, object_type="joint_releases",
                 object_id=",".join(str(r["job"].id) for r in releases)[:64] or None,
                 ip=client_ip(request))
    db.commit()
    return render(request, ctx, "merchant_segments.html", releases=releases,
                  min_size=min_size)
