"""Merchant, operator and compute-centre pages (aggregates only, never individuals).

A merchant sees only the segmentations granted to it; the operator sees the names and sizes
of every segmentation granted to some merchant (what campaigns are sent to) and how many
segmentation requests there are — counts only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AudienceViewer,
    CentreScheduleViewer,
    ContextDep,
    ReleaseViewer,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Job, JobKind, Segment, User
from cipherseg.platform.routes.common import render
from cipherseg.platform.segments import SegmentView, release_view
from cipherseg.platform.services import grants
from cipherseg.platform.services import requests as requests_service

router = APIRouter(include_in_schema=False)


def release_rows(db: Session, jobs: Sequence[Job], *, min_size: int,
                 with_profiles: bool) -> list[dict[str, Any]]:
    """Released segmentations as merchants (or, without profiles, the operator) see them."""
    out = []
    for job in jobs:
        segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
        views: list[SegmentView] = release_view(segs, min_size=min_size,
                                                with_profiles=with_profiles)
        out.append({"job": job, "job_id": job.number, "kind": job.kind,
                    "owner": grants.owners_label(db, job),
                    "released": job.finished_at.strftime("%Y-%m-%d") if job.finished_at
                    else "", "segments": views})
    return out


def merchant_releases(db: Session, merchant: User, *, min_size: int,
                      kinds: Sequence[str] = grants.RELEASABLE_KINDS) -> list[dict[str, Any]]:
    """The segmentations granted to ``merchant`` (newest grant first), with profiles; the
    date shown is the grant's."""
    jobs = grants.granted_jobs(db, merchant, kinds=kinds)
    rows = release_rows(db, jobs, min_size=min_size, with_profiles=True)
    granted = grants.granted_dates(db, merchant, [j.id for j in jobs])
    for row in rows:
        row["released"] = granted[row["job"].id].strftime("%Y-%m-%d")
    return rows


def operator_releases(db: Session, *, min_size: int) -> list[dict[str, Any]]:
    """Every segmentation granted to some merchant: names and sizes, and to whom."""
    rows = release_rows(db, grants.released_jobs(db), min_size=min_size, with_profiles=False)
    for row in rows:
        row["merchants"] = grants.grantees(db, row["job"].id)
    return rows


@router.get("/merchant/segments", response_class=HTMLResponse)
def merchant_segments(request: Request, ctx: ContextDep, db: SessionDep,
                      merchant: ReleaseViewer) -> Response:
    """Segments released to this merchant, with profiles (sizes ≥ the minimum)."""
    min_size = ctx.settings.min_segment_size
    data = merchant_releases(db, merchant, min_size=min_size, kinds=(JobKind.SEGMENTATION,))
    audit.record(db, "result_view", actor=merchant, object_type="releases",
                 object_id=",".join(str(r["job"].id) for r in data)[:64] or None,
                 ip=client_ip(request))
    db.commit()
    return render(request, ctx, "merchant_segments.html", releases=data, min_size=min_size)


@router.get("/operator/audiences", response_class=HTMLResponse)
def operator_audiences(request: Request, ctx: ContextDep, db: SessionDep,
                       operator: AudienceViewer) -> Response:
    """Names and sizes of released segments (what a send needs) and request counts."""
    min_size = ctx.settings.min_segment_size
    data = operator_releases(db, min_size=min_size)
    audit.record(db, "result_view", actor=operator, object_type="audiences",
                 ip=client_ip(request))
    db.commit()
    return render(request, ctx, "operator_audiences.html", releases=data, min_size=min_size,
                  request_counts=requests_service.counts(db))


@router.get("/centre/jobs", response_class=HTMLResponse)
def centre_jobs(request: Request, ctx: ContextDep, db: SessionDep,
                _centre: CentreScheduleViewer) -> Response:
    """The public schedule of segmentation jobs, single-owner and joint: sizes and status
    only."""
    jobs = list(db.scalars(select(Job).where(Job.kind.in_(grants.RELEASABLE_KINDS))
                           .order_by(Job.id.desc()).limit(100)))
    return render(request, ctx, "centre_jobs.html", jobs=jobs,
                  kinds={job.id: centre_kind_label(job) for job in jobs})


def centre_kind_label(job: Job) -> str:
    """What the centre's schedule calls a job: who takes part, never what they hold."""
    params = job.params or {}
    if job.kind == JobKind.JOINT:
        return f"joint ({len(params.get('participants', []))} owners on this platform)"
    if job.kind == JobKind.JOINT_NODE:
        return "joint across organisations (this node's part)"
    if job.kind == JobKind.VERTICAL_NODE:
        return "vertical, with a merchant's features"
    return "single owner"
