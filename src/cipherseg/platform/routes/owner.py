"""Data-owner pages: templates, uploads with live progress, customers and erasure,
segmentation jobs with live progress, release to merchants, label export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy import func, select

from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.core.config import WEB_SCHEMES
from cipherseg.platform.demo_data import demo_csv
from cipherseg.platform.deps import ContextDep, IdPath, OwnerUser, SessionDep, client_ip
from cipherseg.platform.models import Customer, Job, Segment, SegmentMember, Transaction, Upload
from cipherseg.platform.routes.common import redirect, render
from cipherseg.platform.segmentation import FEATURES, start_segmentation
from cipherseg.platform.segments import owner_view
from cipherseg.platform.services import erase_customer, save_upload, upload_job_id
from cipherseg.platform.uploads import FORMATS, KINDS, template_csv, template_xlsx

router = APIRouter(prefix="/owner", include_in_schema=False)
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PREVIEW = 20


def _attachment(body: bytes, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ------------------------------------------------------------------------------ data
@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser) -> Response:
    """Templates, upload form and the list of uploads."""
    return render(request, ctx, "owner_data.html", **_data_context(db, owner.id))


@router.get("/templates/{kind}.{fmt}")
def template_download(kind: str, fmt: str, _owner: OwnerUser) -> Response:
    """The CSV or XLSX template for customers or transactions."""
    if kind not in KINDS or fmt not in FORMATS:
        raise HTTPException(404, "no such template; use customers or transactions, csv or xlsx")
    if fmt == "csv":
        return _attachment(template_csv(kind), f"cipherseg-{kind}-template.csv",
                           "text/csv; charset=utf-8")
    return _attachment(template_xlsx(kind), f"cipherseg-{kind}-template.xlsx", _XLSX)


@router.get("/demo/{kind}.csv")
def demo_download(kind: str, _owner: OwnerUser) -> Response:
    """Synthetic demo data in the template format (600 customers)."""
    if kind not in KINDS:
        raise HTTPException(404, "no such demo file; use customers or transactions")
    customers, transactions = demo_csv()
    return _attachment(customers if kind == "customers" else transactions,
                       f"demo-{kind}.csv", "text/csv; charset=utf-8")


@router.post("/uploads", response_class=HTMLResponse)
def upload_create(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                  file: Annotated[UploadFile, File()],
                  kind: Annotated[str, Form(max_length=32)] = "customers") -> Response:
    """Store the file and queue its validation and import (done by the worker)."""
    try:
        up = save_upload(ctx, db, owner, kind, file.filename or "upload", file.file,
                         ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return render(request, ctx, "owner_data.html", status_code=400, error=str(exc),
                      **_data_context(db, owner.id))
    return redirect(f"/owner/uploads/{up.id}")


def _data_context(db: SessionDep, owner_id: int) -> dict[str, Any]:
    return {
        "uploads": list(db.scalars(select(Upload).where(Upload.owner_id == owner_id)
                                   .order_by(Upload.id.desc()).limit(50))),
        "n_customers": db.scalar(select(func.count()).select_from(Customer)
                                 .where(Customer.owner_id == owner_id)),
        "n_transactions": db.scalar(select(func.count()).select_from(Transaction)
                                    .where(Transaction.owner_id == owner_id)),
    }


def _own_upload(db: SessionDep, owner_id: int, upload_id: int) -> Upload:
    up = db.get(Upload, upload_id)
    if up is None or up.owner_id != owner_id:
        raise HTTPException(404, "no such upload")
    return up


def _upload_context(db: SessionDep, up: Upload) -> dict[str, Any]:
    job_id = upload_job_id(db, up.id)
    job = db.get(Job, job_id) if job_id else None
    finished = up.status in ("imported", "rejected", "failed")
    percent = 100.0 if finished else (job.progress * 100 if job else 0.0)
    preview: list[dict[str, str]] = []
    n_more = 0
    if up.error_report:
        rows = list(csv.DictReader(io.StringIO(up.error_report.decode("utf-8"))))
        preview = rows[:_PREVIEW]
        n_more = max(0, len(rows) - _PREVIEW)
    return {"upload": up, "job": job, "finished": finished, "percent": percent,
            "errors_preview": preview, "n_more": n_more}


@router.get("/uploads/{upload_id}", response_class=HTMLResponse)
def upload_page(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                upload_id: IdPath) -> Response:
    """An upload's status, live progress and error report."""
    up = _own_upload(db, owner.id, upload_id)
    return render(request, ctx, "upload_detail.html", **_upload_context(db, up))


@router.get("/uploads/{upload_id}/progress", response_class=HTMLResponse)
def upload_progress(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                    upload_id: IdPath) -> Response:
    """The progress fragment htmx polls."""
    up = _own_upload(db, owner.id, upload_id)
    return render(request, ctx, "partials/upload_progress.html", **_upload_context(db, up))


@router.get("/uploads/{upload_id}/errors.csv")
def upload_errors(request: Request, db: SessionDep, owner: OwnerUser,
                  upload_id: IdPath) -> Response:
    """Download the report of every bad row (values masked or shortened)."""
    up = _own_upload(db, owner.id, upload_id)
    if not up.error_report:
        raise HTTPException(404, "this upload has no error report")
    audit.record(db, "export", actor=owner, object_type="upload_errors", object_id=up.id,
                 ip=client_ip(request))
    db.commit()
    return _attachment(up.error_report, f"upload-{up.id}-errors.csv", "text/csv; charset=utf-8")


# ------------------------------------------------------------------------------ customers
@router.get("/customers", response_class=HTMLResponse)
def customers_page(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                   q: str | None = None, offset: int = 0) -> Response:
    """Customers with masked phone numbers; erase button per customer."""
    limit = 50
    offset = max(0, offset)
    n_tx = (select(func.count()).select_from(Transaction)
            .where(Transaction.customer_id == Customer.id).scalar_subquery())
    stmt = select(Customer, n_tx).where(Customer.owner_id == owner.id)
    if q:
        stmt = stmt.where(Customer.external_id == q.strip())
    rows = db.execute(stmt.order_by(Customer.external_id).limit(limit).offset(offset)).all()
    total = db.scalar(select(func.count()).select_from(Customer)
                      .where(Customer.owner_id == owner.id))
    return render(request, ctx, "owner_customers.html", rows=rows, total=total, q=q,
                  offset=offset, limit=limit)


@router.post("/customers/{customer_id}/erase", response_class=HTMLResponse)
def customer_erase(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                   customer_id: IdPath,
                   confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Erase a customer (confirmation box required)."""
    if confirm != "yes":
        raise HTTPException(400, "tick the confirmation box to erase a customer")
    if not erase_customer(ctx, db, owner, customer_id, ip=client_ip(request)):
        raise HTTPException(404, "no such customer")
    return redirect("/owner/customers?done=erased")


# ------------------------------------------------------------------------------ jobs
def _jobs_page(request: Request, ctx: ContextDep, db: SessionDep, owner_id: int, *,
               status_code: int = 200, error: str | None = None) -> Response:
    jobs = list(db.scalars(select(Job).where(Job.owner_id == owner_id,
                                             Job.kind == "segmentation")
                           .order_by(Job.id.desc()).limit(50)))
    return render(request, ctx, "owner_jobs.html", status_code=status_code, error=error,
                  jobs=jobs, features=list(FEATURES.items()), schemes=WEB_SCHEMES,
                  max_k=ctx.settings.max_k)


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser) -> Response:
    """Start a segmentation; list earlier ones."""
    return _jobs_page(request, ctx, db, owner.id)


@router.post("/jobs", response_class=HTMLResponse)
def job_create(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
               k: Annotated[int, Form()] = 4,
               features: Annotated[list[str] | None, Form()] = None,
               scheme: Annotated[str, Form(max_length=16)] = "ckks") -> Response:
    """Queue a segmentation job (run by the worker, not in this request)."""
    try:
        job = start_segmentation(ctx, db, owner, k=k, features=features or [], scheme=scheme,
                                 ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _jobs_page(request, ctx, db, owner.id, status_code=400, error=str(exc))
    return redirect(f"/owner/jobs/{job.id}")


def _own_job(db: SessionDep, owner_id: int, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.owner_id != owner_id or job.kind != "segmentation":
        raise HTTPException(404, "no such segmentation")
    return job


def _job_context(ctx: ContextDep, db: SessionDep, job: Job) -> dict[str, Any]:
    segments = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    return {"job": job, "segments": owner_view(segments) if job.status == "done" else [],
            "min_size": ctx.settings.min_segment_size}


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
             job_id: IdPath) -> Response:
    """A segmentation's live progress and, when done, its segments."""
    job = _own_job(db, owner.id, job_id)
    if job.status == "done":
        audit.record(db, "result_view", actor=owner, object_type="job", object_id=job.id,
                     ip=client_ip(request))
        db.commit()
    return render(request, ctx, "owner_job.html", **_job_context(ctx, db, job))


@router.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
def job_progress(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                 job_id: IdPath) -> Response:
    """The progress fragment htmx polls."""
    job = _own_job(db, owner.id, job_id)
    return render(request, ctx, "partials/job_progress.html", **_job_context(ctx, db, job))


@router.post("/jobs/{job_id}/publish", response_class=HTMLResponse)
def job_publish(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                job_id: IdPath) -> Response:
    """Release a finished segmentation's segments to merchants and the operator."""
    job = _own_job(db, owner.id, job_id)
    if job.status != "done":
        raise HTTPException(409, "only a finished segmentation can be released")
    if not job.published:
        job.published = True
        audit.record(db, "job_publish", actor=owner, object_type="job", object_id=job.id,
                     ip=client_ip(request))
        db.commit()
    return redirect(f"/owner/jobs/{job.id}?done=published")


@router.get("/jobs/{job_id}/labels.csv")
def job_labels(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
               job_id: IdPath) -> Response:
    """Labels per pseudonymised customer (the owner's own data; audited export)."""
    job = _own_job(db, owner.id, job_id)
    if job.status != "done":
        raise HTTPException(409, "the segmentation has not finished")
    audit.record(db, "export", actor=owner, object_type="job_labels", object_id=job.id,
                 ip=client_ip(request))
    db.commit()
    names = dict(db.execute(select(Segment.position, Segment.name)
                            .where(Segment.job_id == job.id)).all())
    export_db = ctx.sessions()

    def body() -> Iterator[str]:
        try:
            yield "pseudonym,segment,segment_name\n"
            stmt = (select(SegmentMember.pseudonym, SegmentMember.segment_index)
                    .where(SegmentMember.job_id == job.id).order_by(SegmentMember.pseudonym)
                    .execution_options(yield_per=5000))
            buf = []
            for pseudo, idx in export_db.execute(stmt):
                buf.append(f"{pseudo},{idx},{names.get(idx, '')}\n")
                if len(buf) >= 5000:
                    yield "".join(buf)
                    buf = []
            yield "".join(buf)
        finally:
            export_db.close()

    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="segmentation-{job.id}-labels.csv"'})
