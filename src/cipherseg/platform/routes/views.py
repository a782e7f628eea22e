"""Merchant, operator and compute-centre pages (aggregates only, never individuals)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.platform import audit
from cipherseg.platform.deps import (
    CentreUser,
    ContextDep,
    MerchantUser,
    OperatorUser,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Job, Segment, User
from cipherseg.platform.routes.common import render
from cipherseg.platform.segments import SegmentView, release_view

router = APIRouter(include_in_schema=False)


def releases(db: Session, *, min_size: int, with_profiles: bool) -> list[dict[str, Any]]:
    """Released segmentations (newest first) as merchants/the operator may see them."""
    jobs = list(db.scalars(select(Job).where(Job.kind == "segmentation", Job.status == "done",
                                             Job.published.is_(True))
                           .order_by(Job.id.desc()).limit(20)))
    owners = {u.id: u.username for u in db.scalars(
        select(User).where(User.id.in_({j.owner_id for j in jobs})))}
    out = []
    for job in jobs:
        segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
        views: list[SegmentView] = release_view(segs, min_size=min_size,
                                                with_profiles=with_profiles)
        out.append({"job_id": job.id, "owner": owners.get(job.owner_id, "?"),
                    "released": job.finished_at.strftime("%Y-%m-%d") if job.finished_at
                    else "", "segments": views})
    return out


@router.get("/merchant/segments", response_class=HTMLResponse)
def merchant_segments(request: Request, ctx: ContextDep, db: SessionDep,
                      merchant: MerchantUser) -> Response:
    """Released segments with profiles (sizes ≥ the minimum segment size)."""
    min_size = ctx.settings.min_segment_size
    data = releases(db, min_size=min_size, with_profiles=True)
    audit.record(db, "result_view", actor=merchant, object_type="releases",
                 object_id=",".join(str(r["job_id"]) for r in data)[:64] or None,
                 ip=client_ip(request))
    db.commit()
    return render(request, ctx, "merchant_segments.html", releases=data, min_size=min_size)


@router.get("/operator/audiences", response_class=HTMLResponse)
def operator_audiences(request: Request, ctx: ContextDep, db: SessionDep,
                       operator: OperatorUser) -> Response:
    """Names and sizes of released segments (what a send needs, nothing more)."""
    min_size = ctx.settings.min_segment_size
    data = releases(db, min_size=min_size, with_profiles=False)
    audit.record(db, "result_view", actor=operator, object_type="audiences",
                 ip=client_ip(request))
    db.commit()
    return render(request, ctx, "operator_audiences.html", releases=data, min_size=min_size)


@router.get("/centre/jobs", response_class=HTMLResponse)
def centre_jobs(request: Request, ctx: ContextDep, db: SessionDep,
                _centre: CentreUser) -> Response:
    """The public schedule of segmentation jobs: sizes and status only."""
    jobs = list(db.scalars(select(Job).where(Job.kind == "segmentation")
                           .order_by(Job.id.desc()).limit(100)))
    return render(request, ctx, "centre_jobs.html", jobs=jobs)
