"""Pages and JSON API of vertical segmentation across organisations (see
:mod:`cipherseg.platform.vertical.service`).

Merchants (``request.create``; session cookie, ``X-CSRF-Token`` on POST):

=============================================== =============================================
``POST /api/v1/vertical/requests``              ``{owner, node, columns, k, note}``: ask
``GET  /api/v1/vertical/requests``              this merchant's requests
``GET  /api/v1/vertical/requests/{id}``         one, with its terms once approved
``GET  /merchant/vertical/{id}/terms.json``     the terms for ``cipherseg vertical join``
=============================================== =============================================

Owners (``joint.run``; releases ``segment.release``):

=============================================== =============================================
``GET  /api/v1/vertical/jobs``                  requests and jobs addressed to this owner
``GET  /api/v1/vertical/jobs/{number}``         status, failure reason, segments, releases
``POST /api/v1/vertical/jobs/{number}/approve`` ``{window_days}``: fix the terms, join
``POST /api/v1/vertical/jobs/{number}/decline`` decline a waiting request
``POST /api/v1/vertical/jobs/{number}/publish`` ``{merchants}``: this platform's grants
=============================================== =============================================
"""

from __future__ import annotations

import json
from datetime import datetime
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
    RequestCreator,
    SegmentReleaser,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Job, Role, Segment, User
from cipherseg.platform.nodes.jobs import node_config
from cipherseg.platform.permissions import Permission
from cipherseg.platform.routes.common import own_job_or_404, redirect, render
from cipherseg.platform.segments import owner_view, views_as_dicts
from cipherseg.platform.services import grants, releases
from cipherseg.platform.vertical.service import (
    KIND,
    REQUESTED,
    approve_request,
    decline_request,
    merchant_jobs,
    owner_jobs,
    request_vertical,
    terms_for,
)

router = APIRouter(include_in_schema=False)
nav = (("/owner/vertical", "Vertical with merchants", Permission.JOINT_RUN),
       ("/merchant/vertical", "Vertical segmentation", Permission.REQUEST_CREATE))
API = "/api/v1/vertical"


class RequestIn(BaseModel):
    owner: str = Field(min_length=1, max_length=64)
    node: str = Field(min_length=1, max_length=64)
    columns: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=8)
    k: int = Field(ge=2, le=64)
    note: str = Field(default="", max_length=500)


class ApproveIn(BaseModel):
    window_days: int = Field(default=365, ge=1, le=3650)


class PublishIn(BaseModel):
    merchants: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=200)


class VerticalOut(BaseModel):
    id: int
    number: int
    status: str
    stage: str
    error: str | None
    merchant: str
    merchant_node: str
    merchant_columns: list[str]
    nodes: list[str]
    k: int
    note: str
    created_at: datetime
    finished_at: datetime | None
    terms: dict[str, Any] | None
    result: dict[str, Any] | None
    segments: list[dict[str, Any]]
    released_to: list[str]


def _out(db: Session, job: Job, *, owner_side: bool) -> VerticalOut:
    p = job.params
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id))) \
        if owner_side else []
    return VerticalOut(
        id=job.id, number=job.number, status=job.status, stage=job.stage, error=job.error,
        merchant=str(p.get("merchant", "")), merchant_node=str(p.get("merchant_node", "")),
        merchant_columns=list(p.get("merchant_columns", [])), nodes=list(p.get("nodes", [])),
        k=int(p.get("k", 0)), note=str(p.get("note", "")), created_at=job.created_at,
        finished_at=job.finished_at, terms=terms_for(job),
        # the merchant sees the model where released to it (/merchant/joint), not here
        result=job.result if owner_side else None,
        segments=views_as_dicts(owner_view(segs)) if owner_side else [],
        released_to=grants.grantees(db, job.id) if owner_side else [])


def _bad(exc: ValidationError) -> HTTPException:
    return HTTPException(400, str(exc))


def _owner_job(db: Session, owner: User, number: int) -> Job:
    return own_job_or_404(db, owner, KIND, number)


def _merchant_job(db: Session, merchant: User, job_id: int) -> Job:
    job = db.scalar(select(Job).where(Job.kind == KIND, Job.id == job_id,
                                      Job.created_by == merchant.id))
    if job is None:
        raise HTTPException(404, "no such vertical segmentation request")
    return job


def _config(ctx: PlatformContext) -> dict[str, Any]:
    try:
        cfg = node_config(ctx.settings)
    except ValidationError as exc:
        return {"configured": False, "problem": str(exc)}
    return {"configured": True, "node": cfg.name, "manager": cfg.manager_url,
            "centre": cfg.centre_url}


# ------------------------------------------------------------------------------ merchant API
@router.post(API + "/requests", status_code=201)
def api_request(request: Request, ctx: ContextDep, db: SessionDep, merchant: RequestCreator,
                body: RequestIn) -> VerticalOut:
    try:
        job = request_vertical(ctx, db, merchant, owner_name=body.owner, node=body.node,
                               columns=body.columns, k=body.k, note=body.note,
                               ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise _bad(exc) from None
    return _out(db, job, owner_side=False)


@router.get(API + "/requests")
def api_requests(db: SessionDep, merchant: RequestCreator) -> list[VerticalOut]:
    return [_out(db, j, owner_side=False) for j in merchant_jobs(db, merchant)]


@router.get(API + "/requests/{job_id}")
def api_request_one(db: SessionDep, merchant: RequestCreator, job_id: IdPath) -> VerticalOut:
    return _out(db, _merchant_job(db, merchant, job_id), owner_side=False)


@router.get("/merchant/vertical/{job_id}/terms.json")
def terms_file(db: SessionDep, merchant: RequestCreator, job_id: IdPath) -> Response:
    terms = terms_for(_merchant_job(db, merchant, job_id))
    if terms is None:
        raise HTTPException(409, "the data owner has not approved this request yet")
    return Response(json.dumps(terms, indent=2), media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="vertical-{job_id}-terms.json"'})


# ------------------------------------------------------------------------------ owner API
@router.get(API + "/jobs")
def api_jobs(db: SessionDep, owner: JointRunner) -> list[VerticalOut]:
    return [_out(db, j, owner_side=True) for j in owner_jobs(db, owner)]


@router.get(API + "/jobs/{number}")
def api_job(db: SessionDep, owner: JointRunner, number: IdPath) -> VerticalOut:
    return _out(db, _owner_job(db, owner, number), owner_side=True)


@router.post(API + "/jobs/{number}/approve")
def api_approve(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                number: IdPath, body: ApproveIn) -> VerticalOut:
    job = _owner_job(db, owner, number)
    try:
        approve_request(ctx, db, owner, job, window_days=body.window_days,
                        ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(409 if job.status != REQUESTED else 400, str(exc)) from None
    db.refresh(job)
    return _out(db, job, owner_side=True)


@router.post(API + "/jobs/{number}/decline")
def api_decline(request: Request, db: SessionDep, owner: JointRunner, number: IdPath
                ) -> VerticalOut:
    job = _owner_job(db, owner, number)
    try:
        decline_request(db, owner, job, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(409, str(exc)) from None
    db.refresh(job)
    return _out(db, job, owner_side=True)


@router.post(API + "/jobs/{number}/publish")
def api_publish(request: Request, db: SessionDep, owner: SegmentReleaser, number: IdPath,
                body: PublishIn) -> VerticalOut:
    job = _owner_job(db, owner, number)
    try:
        releases.publish(db, owner, job, body.merchants, ip=client_ip(request))
    except ValidationError as exc:
        raise _bad(exc) from None
    return _out(db, job, owner_side=True)


# ------------------------------------------------------------------------------ pages
def _owners(db: Session) -> list[User]:
    return list(db.scalars(select(User).where(User.role == Role.OWNER.value,
                                              User.active.is_(True)).order_by(User.username)))


def _merchant_page(request: Request, ctx: PlatformContext, db: Session, merchant: User, *,
                   job: Job | None = None, error: str | None = None,
                   form: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    return render(request, ctx, "vertical.html", status_code=status_code, side="merchant",
                  config=_config(ctx), error=error, form=form or {}, owners=_owners(db),
                  jobs=[_out(db, j, owner_side=False) for j in merchant_jobs(db, merchant)],
                  job=_out(db, job, owner_side=False) if job is not None else None,
                  max_k=ctx.settings.max_k)


@router.get("/merchant/vertical", response_class=HTMLResponse)
def merchant_page(request: Request, ctx: ContextDep, db: SessionDep, merchant: RequestCreator
                  ) -> Response:
    """Ask a data owner for segments of your shared customers built from its purchases and
    your own data, which stays on your machine."""
    return _merchant_page(request, ctx, db, merchant)


@router.post("/merchant/vertical", response_class=HTMLResponse)
def merchant_request(request: Request, ctx: ContextDep, db: SessionDep,
                     merchant: RequestCreator,
                     owner: Annotated[str, Form(max_length=64)] = "",
                     node: Annotated[str, Form(max_length=64)] = "",
                     columns: Annotated[str, Form(max_length=600)] = "",
                     k: Annotated[int, Form()] = 4,
                     note: Annotated[str, Form(max_length=500)] = "") -> Response:
    form = {"owner": owner, "node": node, "columns": columns, "k": k, "note": note}
    try:
        job = request_vertical(ctx, db, merchant, owner_name=owner, node=node,
                               columns=columns.replace(",", " ").split(), k=k, note=note,
                               ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _merchant_page(request, ctx, db, merchant, error=str(exc), form=form,
                              status_code=400)
    return redirect(f"/merchant/vertical/{job.id}")


@router.get("/merchant/vertical/{job_id}", response_class=HTMLResponse)
def merchant_job_page(request: Request, ctx: ContextDep, db: SessionDep,
                      merchant: RequestCreator, job_id: IdPath) -> Response:
    """One request: its status, and once approved the terms and the command to run."""
    return _merchant_page(request, ctx, db, merchant,
                          job=_merchant_job(db, merchant, job_id))


def _owner_page(request: Request, ctx: PlatformContext, db: Session, owner: User, *,
                job: Job | None = None, error: str | None = None,
                status_code: int = 200) -> Response:
    return render(request, ctx, "vertical.html", status_code=status_code, side="owner",
                  config=_config(ctx), error=error, form={},
                  jobs=[_out(db, j, owner_side=True) for j in owner_jobs(db, owner)],
                  job=_out(db, job, owner_side=True) if job is not None else None,
                  merchants=grants.merchant_accounts(db), max_k=ctx.settings.max_k)


@router.get("/owner/vertical", response_class=HTMLResponse)
def owner_page(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner
               ) -> Response:
    """Merchants' requests for vertical segmentations, and their jobs."""
    return _owner_page(request, ctx, db, owner)


@router.get("/owner/vertical/{number}", response_class=HTMLResponse)
def owner_job_page(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                   number: IdPath) -> Response:
    """One request or job: approve or decline; status, segments, releases."""
    return _owner_page(request, ctx, db, owner, job=_owner_job(db, owner, number))


@router.post("/owner/vertical/{number}/approve", response_class=HTMLResponse)
def owner_approve(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                  number: IdPath, window_days: Annotated[int, Form()] = 365) -> Response:
    job = _owner_job(db, owner, number)
    try:
        approve_request(ctx, db, owner, job, window_days=window_days, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _owner_page(request, ctx, db, owner, job=job, error=str(exc), status_code=400)
    return redirect(f"/owner/vertical/{number}")


@router.post("/owner/vertical/{number}/decline", response_class=HTMLResponse)
def owner_decline(request: Request, ctx: ContextDep, db: SessionDep, owner: JointRunner,
                  number: IdPath) -> Response:
    job = _owner_job(db, owner, number)
    try:
        decline_request(db, owner, job, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _owner_page(request, ctx, db, owner, job=job, error=str(exc), status_code=409)
    return redirect(f"/owner/vertical/{number}")


@router.post("/owner/vertical/{number}/publish", response_class=HTMLResponse)
def owner_publish(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentReleaser,
                  number: IdPath,
                  merchants: Annotated[list[str] | None, Form(max_length=64)] = None
                  ) -> Response:
    """Release the shared customers' segments to the merchants ticked (this platform's
    grants: minimum segment size and opt-outs apply as for every release)."""
    job = _owner_job(db, owner, number)
    try:
        releases.publish(db, owner, job, merchants or [], ip=client_ip(request))
    except ValidationError as exc:
        return _owner_page(request, ctx, db, owner, job=job, error=f"Not released: {exc}.",
                           status_code=400)
    return redirect(f"/owner/vertical/{number}")
