"""Pages and JSON API of cross-node joint jobs (see :mod:`cipherseg.platform.nodes.jobs`).

API (session cookie; ``X-CSRF-Token`` on POST), all for owners with ``joint.run``:

========================================== ==================================================
``GET  /api/v1/nodes/config``              this node's name, services and key fingerprint
``POST /api/v1/nodes/invitations``         ``{k, nodes, window_days}`` → the invitation and
                                           this node's job (it joins and waits at once)
``POST /api/v1/nodes/invitations/review``  ``{invitation}`` → terms, inviter, fingerprint,
                                           what would stop this node from accepting
``POST /api/v1/nodes/invitations/accept``  ``{invitation}`` → this node's job
``GET  /api/v1/nodes/jobs``                this owner's cross-node jobs
``GET  /api/v1/nodes/jobs/{number}``       status, the reason of a failure, model, sizes
``POST /api/v1/nodes/jobs/{number}/publish`` ``{merchants}``: this node's grants
``POST /api/v1/nodes/jobs/{number}/leave`` end the session for every node (nothing released)
========================================== ==================================================
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.errors import ValidationError
from cipherseg.platform.deps import (
    ContextDep,
    IdPath,
    JointRunner,
    PlatformContext,
    SegmentReleaser,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Job, Segment, User
from cipherseg.platform.nodes.jobs import (
    KIND,
    accept_invitation,
    create_invitation,
    key_fingerprint,
    leave_job,
    node_config,
    review_invitation,
)
from cipherseg.platform.permissions import Permission
from cipherseg.platform.routes.common import own_job_or_404, redirect, render
from cipherseg.platform.segments import owner_view, views_as_dicts
from cipherseg.platform.services import grants, releases
from cipherseg.platform.services import jobs as jobs_service

router = APIRouter(include_in_schema=False)
nav = (("/owner/nodes", "Joint across organisations", Permission.JOINT_RUN),)
API = "/api/v1/nodes"


class InviteIn(BaseModel):
    k: int = Field(ge=2, le=64)
    nodes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=6, description="the other nodes' names")
    window_days: int = Field(default=365, ge=1, le=3650)
    window_end: date | None = Field(default=None, description=(
        "exclusive end of the time window (default: the day after this node's latest "
        "purchase); recency counts from it"))


class InvitationIn(BaseModel):
    invitation: str = Field(min_length=1, max_length=16_000)


class PublishIn(BaseModel):
    merchants: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=200)


class NodeJobOut(BaseModel):
    number: int
    status: str
    stage: str
    progress: float
    error: str | None
    role: str
    nodes: list[str]
    k: int
    session: str
    window_end: str
    window_days: int
    created_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    segments: list[dict[str, Any]]
    released_to: list[str]


def _job_out(db: Session, job: Job) -> NodeJobOut:
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    terms = job.params.get("terms", {})
    return NodeJobOut(number=job.number, status=job.status, stage=job.stage,
                      progress=job.progress, error=job.error, role=job.params.get("role", ""),
                      nodes=list(terms.get("nodes", [])), k=int(terms.get("n_clusters", 0)),
                      session=str(terms.get("session", "")),
                      window_end=str(terms.get("context", {}).get("snapshot", "")),
                      window_days=int(terms.get("context", {}).get("window_days", 0)),
                      created_at=job.created_at,
                      finished_at=job.finished_at, result=job.result,
                      segments=views_as_dicts(owner_view(segs)),
                      released_to=grants.grantees(db, job.id))


def _own_job(db: Session, owner: User, number: int) -> Job:
    return own_job_or_404(db, owner, KIND, number)


def _bad(exc: ValidationError) -> HTTPException:
    return HTTPException(400, str(exc))


def _config(ctx: PlatformContext) -> dict[str, Any]:
    try:
        cfg = node_config(ctx.settings)
    except ValidationError as exc:
        return {"configured": False, "problem": str(exc)}
    return {"configured": True, "node": cfg.name, "manager": cfg.manager_url,
            "centre": cfg.centre_url, "fingerprint": key_fingerprint(cfg)}


# ------------------------------------------------------------------------------ API
@router.get(API + "/config")
def api_config(ctx: ContextDep, owner: JointRunner) -> dict[str, Any]:
    return _config(ctx)


@router.post(API + "/invitations", status_code=201)
def api_invite(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
               body: InviteIn) -> dict[str, Any]:
    try:
        job, token = create_invitation(ctx, db, owner, others=body.nodes, k=body.k,
                                       window_days=body.window_days,
                                       window_end=body.window_end, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise _bad(exc) from None
    return {"invitation": token, "job": _job_out(db, job).model_dump(mode="json")}


@router.post(API + "/invitations/review")
def api_review(ctx: ContextDep, owner: JointRunner, body: InvitationIn) -> dict[str, Any]:
    try:
        inv, problems = review_invitation(ctx, body.invitation)
    except ValidationError as exc:
        raise _bad(exc) from None
    return {"terms": inv.terms.to_json(), "inviter": inv.inviter,
            "fingerprint": inv.fingerprint, "expires": inv.expires.isoformat(),
            "problems": problems}


@router.post(API + "/invitations/accept", status_code=201)
def api_accept(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
               body: InvitationIn) -> NodeJobOut:
    try:
        job = accept_invitation(ctx, db, owner, body.invitation, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise _bad(exc) from None
    return _job_out(db, job)


@router.get(API + "/jobs")
def api_jobs(db: SessionDep, owner: JointRunner) -> list[NodeJobOut]:
    return [_job_out(db, j) for j in db.scalars(
        select(Job).where(Job.kind == KIND, Job.owner_id == owner.id)
        .order_by(Job.id.desc()).limit(100))]


@router.get(API + "/jobs/{number}")
def api_job(request: Request, db: SessionDep, owner: JointRunner, number: IdPath
            ) -> NodeJobOut:
    job = _own_job(db, owner, number)
    jobs_service.record_result_view(db, owner, job, ip=client_ip(request))
    return _job_out(db, job)


@router.post(API + "/jobs/{number}/publish")
def api_publish(request: Request, db: SessionDep, owner: SegmentReleaser, number: IdPath,
                body: PublishIn) -> NodeJobOut:
    job = _own_job(db, owner, number)
    try:
        releases.publish(db, owner, job, body.merchants, ip=client_ip(request))
    except ValidationError as exc:
        raise _bad(exc) from None
    return _job_out(db, job)


@router.post(API + "/jobs/{number}/leave")
def api_leave(ctx: ContextDep, db: SessionDep, owner: JointRunner, number: IdPath
              ) -> NodeJobOut:
    """Leave a queued or running job: the session ends on every node, nothing released."""
    job = _own_job(db, owner, number)
    try:
        leave_job(ctx, db, owner, job)
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(409, str(exc)) from None
    db.refresh(job)
    return _job_out(db, job)


# ------------------------------------------------------------------------------ pages
def _list(request: Request, ctx: PlatformContext, db: Session, owner: User, *,
          status_code: int = 200, error: str | None = None, invitation: str | None = None,
          review: dict[str, Any] | None = None) -> Response:
    jobs = [_job_out(db, j) for j in db.scalars(
        select(Job).where(Job.kind == KIND, Job.owner_id == owner.id)
        .order_by(Job.id.desc()).limit(50))]
    return render(request, ctx, "owner_nodes.html", status_code=status_code, error=error,
                  config=_config(ctx), jobs=jobs, job=None, invitation=invitation,
                  review=review, max_k=ctx.settings.max_k)


@router.get("/owner/nodes", response_class=HTMLResponse)
def nodes_page(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner
               ) -> Response:
    """Joint segmentation with other organisations' nodes: invite, review, accept, status."""
    return _list(request, ctx, db, owner)


@router.post("/owner/nodes/invite", response_class=HTMLResponse)
def nodes_invite(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                 k: Annotated[int, Form()] = 4,
                 nodes: Annotated[str, Form(max_length=500)] = "",
                 window_days: Annotated[int, Form()] = 365,
                 window_end: Annotated[str, Form(max_length=10)] = "") -> Response:
    """Create an invitation (shown once, to copy to the other nodes' owners)."""
    try:
        end = date.fromisoformat(window_end) if window_end.strip() else None
    except ValueError:
        return _list(request, ctx, db, owner, status_code=400,
                     error="the window's end must be a date (YYYY-MM-DD)")
    try:
        _, token = create_invitation(ctx, db, owner, others=nodes.replace(",", " ").split(),
                                     k=k, window_days=window_days, window_end=end,
                                     ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _list(request, ctx, db, owner, status_code=400, error=str(exc))
    return _list(request, ctx, db, owner, invitation=token)


@router.post("/owner/nodes/review", response_class=HTMLResponse)
def nodes_review(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                 invitation: Annotated[str, Form(max_length=16_000)] = "") -> Response:
    """Show an invitation's terms before accepting it."""
    try:
        inv, problems = review_invitation(ctx, invitation)
    except ValidationError as exc:
        return _list(request, ctx, db, owner, status_code=400, error=str(exc))
    return _list(request, ctx, db, owner, review={
        "token": invitation.strip(), "terms": inv.terms, "inviter": inv.inviter,
        "fingerprint": inv.fingerprint, "expires": inv.expires, "problems": problems})


@router.post("/owner/nodes/accept", response_class=HTMLResponse)
def nodes_accept(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                 invitation: Annotated[str, Form(max_length=16_000)] = "") -> Response:
    """Accept: this node's job joins the session."""
    try:
        job = accept_invitation(ctx, db, owner, invitation, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _list(request, ctx, db, owner, status_code=400, error=str(exc))
    return redirect(f"/owner/nodes/{job.number}")


@router.get("/owner/nodes/{number}", response_class=HTMLResponse)
def node_job_page(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                  number: IdPath) -> Response:
    """One cross-node job: its nodes, status or failure reason, the model, this node's
    customers per segment, this node's releases."""
    job = _own_job(db, owner, number)
    return render(request, ctx, "owner_nodes.html", config=_config(ctx), jobs=[],
                  job=_job_out(db, job), merchants=grants.merchant_accounts(db),
                  invitation=None, review=None, max_k=ctx.settings.max_k)


@router.post("/owner/nodes/{number}/leave", response_class=HTMLResponse)
def node_job_leave(ctx: ContextDep, db: SessionDep, owner: JointRunner, number: IdPath
                   ) -> Response:
    """Leave the job: the session ends on every node and nothing is released."""
    job = _own_job(db, owner, number)
    try:
        leave_job(ctx, db, owner, job)
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(409, str(exc)) from None
    return redirect(f"/owner/nodes/{job.number}")


@router.post("/owner/nodes/{number}/publish", response_class=HTMLResponse)
def node_job_publish(request: Request, db: SessionDep, owner: SegmentReleaser, number: IdPath,
                     merchants: Annotated[list[str] | None, Form(max_length=64)] = None
                     ) -> Response:
    """Release this node's copy of the model to the merchants ticked (this node's grants)."""
    job = _own_job(db, owner, number)
    try:
        releases.publish(db, owner, job, merchants or [], ip=client_ip(request))
    except ValidationError as exc:
        raise HTTPException(400, f"Not released: {exc}.") from None
    return redirect(f"/owner/nodes/{job.number}?done=granted")
