"""Data-owner pages: templates, uploads with live progress, customers and erasure,
segmentation jobs with live progress, releases (grants to named merchants, revocation),
label export. Uploads and segmentations appear by the owner's own numbers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select

from cipherseg.analytics.window import TimeWindow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.core.config import WEB_SCHEMES
from cipherseg.platform.csv_export import csv_response
from cipherseg.platform.demo_data import demo_csv
from cipherseg.platform.deps import (
    ContextDep,
    CustomerEraser,
    CustomerReader,
    DataUploader,
    FilterQuery,
    IdPath,
    OffsetQuery,
    SegmentReleaser,
    SegmentRunner,
    SessionDep,
    client_ip,
)
from cipherseg.platform.k_chart import choose_k_chart
from cipherseg.platform.models import (
    UPLOAD_FINISHED,
    Customer,
    Job,
    JobKind,
    JobStatus,
    Segment,
    SegmentMember,
    Transaction,
    Upload,
    UploadError,
    User,
)
from cipherseg.platform.routes.common import own_job_or_404, parse_window, redirect, render
from cipherseg.platform.segments import owner_view
from cipherseg.platform.services import grants, releases
from cipherseg.platform.services import jobs as jobs_service
from cipherseg.platform.services.customers import erase_customer
from cipherseg.platform.services.requests import pending_count
from cipherseg.platform.services.segmentation import FEATURES, choose_ks, start_segmentation
from cipherseg.platform.services.uploads import error_report, save_upload, upload_job_id
from cipherseg.platform.uploads import (
    FORMATS,
    KEEP_PER_COLUMN,
    KINDS,
    template_csv,
    template_xlsx,
)

router = APIRouter(prefix="/owner", include_in_schema=False)
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PREVIEW = 20


def _attachment(body: bytes, filename: str, media_type: str) -> Response:
    return Response(body, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# ------------------------------------------------------------------------------ data
@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, ctx: ContextDep, db: SessionDep, owner: DataUploader) -> Response:
    """Templates, upload form and the list of uploads."""
    return render(request, ctx, "owner_data.html", max_upload_mb=ctx.settings.max_upload_mb,
                  **_data_context(db, owner.id))


@router.get("/templates/{kind}.{fmt}")
def template_download(kind: str, fmt: str, _owner: DataUploader) -> Response:
    """The CSV or XLSX template for customers or transactions."""
    if kind not in KINDS or fmt not in FORMATS:
        raise HTTPException(404, "no such template; use customers or transactions, csv or xlsx")
    if fmt == "csv":
        return _attachment(template_csv(kind), f"cipherseg-{kind}-template.csv",
                           "text/csv; charset=utf-8")
    return _attachment(template_xlsx(kind), f"cipherseg-{kind}-template.xlsx", _XLSX)


@router.get("/demo/{kind}.csv")
def demo_download(kind: str, _owner: DataUploader) -> Response:
    """Synthetic demo data in the template format (600 customers)."""
    if kind not in KINDS:
        raise HTTPException(404, "no such demo file; use customers or transactions")
    customers, transactions = demo_csv()
    return _attachment(customers if kind == "customers" else transactions,
                       f"demo-{kind}.csv", "text/csv; charset=utf-8")


@router.post("/uploads", response_class=HTMLResponse)
def upload_create(request: Request, ctx: ContextDep, db: SessionDep, owner: DataUploader,
                  file: Annotated[UploadFile, File()],
                  kind: Annotated[str, Form(max_length=32)] = "customers") -> Response:
    """Store the file and queue its validation and import (done by the worker)."""
    try:
        up = save_upload(ctx, db, owner, kind, file.filename or "upload", file.file,
                         ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return render(request, ctx, "owner_data.html", status_code=400, error=str(exc),
                      max_upload_mb=ctx.settings.max_upload_mb, **_data_context(db, owner.id))
    return redirect(f"/owner/uploads/{up.number}")


def _data_context(db: SessionDep, owner_id: int) -> dict[str, Any]:
    return {
        "uploads": list(db.scalars(select(Upload).where(Upload.owner_id == owner_id)
                                   .order_by(Upload.id.desc()).limit(50))),
        "n_customers": db.scalar(select(func.count()).select_from(Customer)
                                 .where(Customer.owner_id == owner_id)),
        "n_transactions": db.scalar(select(func.count()).select_from(Transaction)
                                    .where(Transaction.owner_id == owner_id)),
    }


def _own_upload(db: SessionDep, owner_id: int, number: int) -> Upload:
    up = db.scalar(select(Upload).where(Upload.owner_id == owner_id, Upload.number == number))
    if up is None:
        raise HTTPException(404, "no such upload")
    return up


def _upload_context(db: SessionDep, up: Upload, errors_offset: int = 0) -> dict[str, Any]:
    job_id = upload_job_id(db, up.id)
    job = db.get(Job, job_id) if job_id else None
    finished = up.status in UPLOAD_FINISHED
    percent = 100.0 if finished else (job.progress * 100 if job else 0.0)
    preview: list[UploadError] = []
    listed = 0
    if up.error_counts is not None:
        preview = list(db.scalars(select(UploadError).where(UploadError.upload_id == up.id)
                                  .order_by(UploadError.id).limit(_PREVIEW)
                                  .offset(errors_offset)))
        listed = db.scalar(select(func.count()).select_from(UploadError)
                           .where(UploadError.upload_id == up.id)) or 0
    counts = up.error_counts or {}
    return {"upload": up, "job": job, "finished": finished, "percent": percent,
            "has_report": bool(up.error_counts or up.error_report),
            "errors_preview": preview, "errors_offset": errors_offset,
            "errors_listed": listed, "page_size": _PREVIEW,
            "error_counts": sorted(counts.items()), "keep_per_column": KEEP_PER_COLUMN,
            "n_problems": sum(counts.values())}


@router.get("/uploads/{number}", response_class=HTMLResponse)
def upload_page(request: Request, ctx: ContextDep, db: SessionDep, owner: DataUploader,
                number: IdPath, errors_offset: OffsetQuery = 0) -> Response:
    """An upload's status, live progress and error report (paged)."""
    up = _own_upload(db, owner.id, number)
    return render(request, ctx, "upload_detail.html",
                  **_upload_context(db, up, errors_offset))


@router.get("/uploads/{number}/progress", response_class=HTMLResponse)
def upload_progress(request: Request, ctx: ContextDep, db: SessionDep, owner: DataUploader,
                    number: IdPath) -> Response:
    """The progress fragment htmx polls."""
    up = _own_upload(db, owner.id, number)
    return render(request, ctx, "partials/upload_progress.html", **_upload_context(db, up))


@router.get("/uploads/{number}/errors.csv")
def upload_errors(request: Request, db: SessionDep, owner: DataUploader,
                  number: IdPath) -> Response:
    """Download the report of every bad row (values masked or shortened)."""
    up = _own_upload(db, owner.id, number)
    if not (up.error_counts or up.error_report):
        raise HTTPException(404, "this upload has no error report")
    audit.record(db, "export", actor=owner, object_type="upload_errors", object_id=up.id,
                 ip=client_ip(request))
    db.commit()
    return csv_response(list(error_report(db, up)), f"upload-{up.number}-errors.csv")


# ------------------------------------------------------------------------------ customers
@router.get("/customers", response_class=HTMLResponse)
def customers_page(request: Request, ctx: ContextDep, db: SessionDep, owner: CustomerReader,
                   q: FilterQuery = None, offset: OffsetQuery = 0) -> Response:
    """Customers with masked phone numbers; erase button per customer."""
    limit = 50
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
def customer_erase(request: Request, ctx: ContextDep, db: SessionDep, owner: CustomerEraser,
                   customer_id: IdPath,
                   confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Erase a customer (confirmation box required)."""
    if confirm != "yes":
        raise HTTPException(400, "tick the confirmation box to erase a customer")
    if not erase_customer(ctx, db, owner, customer_id, ip=client_ip(request)):
        raise HTTPException(404, "no such customer")
    return redirect("/owner/customers?done=erased")


# ------------------------------------------------------------------------------ jobs
def _jobs_page(request: Request, ctx: ContextDep, db: SessionDep, owner: User, *,
               status_code: int = 200, error: str | None = None,
               form: dict[str, Any] | None = None) -> Response:
    jobs = list(db.scalars(select(Job).where(Job.owner_id == owner.id,
                                             Job.kind == JobKind.SEGMENTATION.value)
                           .order_by(Job.id.desc()).limit(50)))
    released = {j.id: grants.grantees(db, j.id) for j in jobs}
    return render(request, ctx, "owner_jobs.html", status_code=status_code, error=error,
                  jobs=jobs, released=released, features=list(FEATURES.items()),
                  schemes=WEB_SCHEMES, max_k=ctx.settings.max_k,
                  choose_ks=choose_ks(ctx.settings.max_k),
                  pending_requests=pending_count(db, owner), form=form or {},
                  window_labels={j.id: TimeWindow.from_dict(j.params.get("window")).label()
                                 for j in jobs})


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, ctx: ContextDep, db: SessionDep,
              owner: SegmentRunner) -> Response:
    """Start a segmentation; list earlier ones."""
    return _jobs_page(request, ctx, db, owner)


@router.post("/jobs", response_class=HTMLResponse)
def job_create(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentRunner,
               k: Annotated[str, Form(max_length=8)] = "4",
               choose_k: Annotated[str, Form(max_length=8)] = "",
               features: Annotated[list[str] | None, Form(max_length=32)] = None,
               top_categories: Annotated[str, Form(max_length=8)] = "3",
               window: Annotated[str, Form(max_length=8)] = "all",
               window_from: Annotated[str, Form(max_length=32)] = "",
               window_to: Annotated[str, Form(max_length=32)] = "",
               window_days: Annotated[str, Form(max_length=8)] = "",
               scheme: Annotated[str, Form(max_length=16)] = "ckks") -> Response:
    """Queue a segmentation job (run by the worker, not in this request)."""
    try:
        k_value = None if choose_k == "yes" else _whole(k, "the number of segments (k)")
        job = start_segmentation(
            ctx, db, owner, k=k_value, features=features or [], scheme=scheme,
            window=parse_window(window, window_from, window_to, window_days),
            top_categories=_whole(top_categories or "3", "the number of top categories"),
            ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        form = {"k": k, "choose_k": choose_k, "features": features or [],
                "top_categories": top_categories, "window": window,
                "window_from": window_from, "window_to": window_to, "window_days": window_days}
        return _jobs_page(request, ctx, db, owner, status_code=400, error=str(exc), form=form)
    return redirect(f"/owner/jobs/{job.number}")


def _whole(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationError(f"give {what} as a whole number") from None


def own_segmentation(db: SessionDep, owner: User, number: int) -> Job:
    """The owner's segmentation number ``number`` (404 otherwise)."""
    return own_job_or_404(db, owner, JobKind.SEGMENTATION, number)


def _job_context(ctx: ContextDep, db: SessionDep, job: Job) -> dict[str, Any]:
    segments = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    choice = (job.result or {}).get("choose_k") if job.status == JobStatus.DONE else None
    return {"job": job, "k_chart": Markup(choose_k_chart(choice)) if choice else None,
            "window_asked": TimeWindow.from_dict(job.params.get("window")).label(),
            "segments": owner_view(segments) if job.status == JobStatus.DONE else [],
            "min_size": ctx.settings.min_segment_size, "grants": grants.grant_rows(db, job.id),
            "merchants": grants.merchant_accounts(db),
            "granted": set(grants.grantees(db, job.id))}


@router.get("/jobs/{number}", response_class=HTMLResponse)
def job_page(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentRunner,
             number: IdPath) -> Response:
    """A segmentation's live progress and, when done, its segments and releases."""
    job = own_segmentation(db, owner, number)
    jobs_service.record_result_view(db, owner, job, ip=client_ip(request))
    return render(request, ctx, "owner_job.html", **_job_context(ctx, db, job))


@router.get("/jobs/{number}/progress", response_class=HTMLResponse)
def job_progress(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentRunner,
                 number: IdPath) -> Response:
    """The progress fragment htmx polls."""
    job = own_segmentation(db, owner, number)
    return render(request, ctx, "partials/job_progress.html", **_job_context(ctx, db, job))


@router.post("/jobs/{number}/publish", response_class=HTMLResponse)
def job_publish(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentReleaser,
                number: IdPath,
                merchants: Annotated[list[str] | None, Form(max_length=64)] = None) -> Response:
    """Release a finished segmentation to the merchants ticked (grants, audited)."""
    job = own_segmentation(db, owner, number)
    try:
        releases.publish(db, owner, job, merchants or [], ip=client_ip(request))
    except ValidationError as exc:
        return render(request, ctx, "owner_job.html", status_code=400,
                      error=f"Not released: {exc}.", **_job_context(ctx, db, job))
    return redirect(f"/owner/jobs/{job.number}?done=granted")


@router.post("/jobs/{number}/revoke", response_class=HTMLResponse)
def job_revoke(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentReleaser,
               number: IdPath, merchant: Annotated[str, Form(max_length=64)] = "") -> Response:
    """Revoke one merchant's grant; that merchant's queued campaign messages are stopped."""
    job = own_segmentation(db, owner, number)
    try:
        grants.revoke(ctx, db, owner, job, merchant, ip=client_ip(request))
    except LookupError:
        raise HTTPException(404, "this segmentation is not released to that merchant") from None
    return redirect(f"/owner/jobs/{job.number}?done=revoked")


@router.get("/jobs/{number}/labels.csv")
def job_labels(request: Request, ctx: ContextDep, db: SessionDep, owner: SegmentRunner,
               number: IdPath) -> Response:
    """Labels per pseudonymised customer (the owner's own data; audited export)."""
    job = own_segmentation(db, owner, number)
    if job.status != JobStatus.DONE:
        raise HTTPException(409, "the segmentation has not finished")
    audit.record(db, "export", actor=owner, object_type="job_labels", object_id=job.id,
                 ip=client_ip(request))
    db.commit()
    names = dict(db.execute(select(Segment.position, Segment.name)
                            .where(Segment.job_id == job.id)).all())
    export_db = ctx.sessions()

    def rows() -> Iterator[list[Any]]:
        try:
            yield ["pseudonym", "segment", "segment_name"]
            stmt = (select(SegmentMember.pseudonym, SegmentMember.segment_index)
                    .where(SegmentMember.job_id == job.id).order_by(SegmentMember.pseudonym)
                    .execution_options(yield_per=5000))
            for pseudo, idx in export_db.execute(stmt):
                yield [pseudo, idx, names.get(idx, "")]
        finally:
            export_db.close()

    return csv_response(rows(), f"segmentation-{job.number}-labels.csv")
