"""The JSON API (``/api/v1``): the same operations as the pages, for scripts.

Authentication is the session cookie from ``POST /login``; state-changing calls need the
session's CSRF token in the ``X-CSRF-Token`` header (``GET /api/v1/me`` returns it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AdminUser,
    AnyUser,
    CentreUser,
    ContextDep,
    IdPath,
    OwnerUser,
    ReleaseViewer,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import Customer, Job, Role, Segment, Upload, User
from cipherseg.platform.routes.views import releases
from cipherseg.platform.segmentation import start_segmentation
from cipherseg.platform.segments import owner_view, views_as_dicts
from cipherseg.platform.services import erase_customer, save_upload
from cipherseg.platform.services.users import create_user, parse_role, update_user


class ErrorOut(BaseModel):
    detail: Any


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (400, "Invalid input"), (401, "Not logged in"),
        (403, "Role not allowed, or missing CSRF token"), (404, "Not found"),
        (409, "Not in a state that allows this"))
}
router = APIRouter(prefix="/api/v1", tags=["api"], responses=_ERRORS)

RoleName = Literal["admin", "owner", "merchant", "centre", "operator"]


class MeOut(BaseModel):
    username: str
    role: RoleName
    csrf_token: str


class UserOut(BaseModel):
    id: int
    username: str
    role: RoleName
    active: bool
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.@-]{2,64}$")
    password: str = Field(min_length=10, max_length=1024)
    role: RoleName


class UserPatch(BaseModel):
    role: RoleName | None = None
    active: bool | None = None


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str | None
    action: str
    object_type: str | None
    object_id: str | None
    ip: str | None
    detail: dict[str, Any] | None


class UploadOut(BaseModel):
    id: int
    kind: str
    filename: str
    status: str
    rows_total: int
    rows_done: int
    n_errors: int
    n_inserted: int
    n_updated: int
    n_unchanged: int
    message: str | None
    created_at: datetime


class CustomerOut(BaseModel):
    id: int
    customer_id: str
    pseudonym: str
    phone: str = Field(description="masked, e.g. 138****5678")
    consent: bool


class SegmentOut(BaseModel):
    name: str
    size: int | None
    size_label: str
    share: float
    profile: dict[str, float] | None


class JobCreate(BaseModel):
    k: int = Field(ge=2, le=64)
    features: list[Literal["recency", "frequency", "monetary"]] = Field(
        default=["recency", "frequency", "monetary"], min_length=1, max_length=3)
    scheme: Literal["ckks"] = "ckks"


class JobOut(BaseModel):
    id: int
    status: str
    stage: str
    progress: float
    params: dict[str, Any]
    published: bool
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    segments: list[SegmentOut] = []


class ReleaseOut(BaseModel):
    job_id: int
    owner: str
    released: str
    segments: list[SegmentOut]


class CentreJobOut(BaseModel):
    id: int
    status: str
    k: int | None
    n_features: int
    n_customers: int | None
    n_iter: int | None
    bytes_to_centre: int | None


def _user_out(u: User) -> UserOut:
    return UserOut(id=u.id, username=u.username, role=u.role, active=u.active,  # type: ignore[arg-type]
                   created_at=u.created_at)


def _upload_out(u: Upload) -> UploadOut:
    return UploadOut(id=u.id, kind=u.kind, filename=u.filename, status=u.status,
                     rows_total=u.rows_total, rows_done=u.rows_done, n_errors=u.n_errors,
                     n_inserted=u.n_inserted, n_updated=u.n_updated, n_unchanged=u.n_unchanged,
                     message=u.message, created_at=u.created_at)


def _job_out(db: SessionDep, job: Job) -> JobOut:
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    return JobOut(id=job.id, status=job.status, stage=job.stage, progress=job.progress,
                  params=job.params, published=job.published, error=job.error,
                  created_at=job.created_at, finished_at=job.finished_at, result=job.result,
                  segments=[SegmentOut(**d) for d in views_as_dicts(owner_view(segs))])


# ------------------------------------------------------------------------------ everyone
@router.get("/me", response_model=MeOut)
def me(request: Request, user: AnyUser) -> MeOut:
    """Who is logged in, and the CSRF token for state-changing calls."""
    return MeOut(username=user.username, role=user.role,  # type: ignore[arg-type]
                 csrf_token=request.state.web_session.csrf_token)


# ------------------------------------------------------------------------------ admin
@router.get("/users", response_model=list[UserOut])
def users_list(db: SessionDep, _admin: AdminUser) -> list[UserOut]:
    """All users."""
    return [_user_out(u) for u in db.scalars(select(User).order_by(User.id))]


@router.post("/users", response_model=UserOut, status_code=201)
def users_create(request: Request, body: UserCreate, db: SessionDep,
                 admin: AdminUser) -> UserOut:
    """Create a user."""
    try:
        user = create_user(db, body.username, body.password, parse_role(body.role))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(400, str(exc)) from None
    audit.record(db, "user_create", actor=admin, object_type="user", object_id=user.username,
                 ip=client_ip(request), detail={"role": user.role})
    db.commit()
    return _user_out(user)


@router.patch("/users/{user_id}", response_model=UserOut)
def users_patch(request: Request, user_id: IdPath, body: UserPatch, db: SessionDep,
                admin: AdminUser) -> UserOut:
    """Change a user's role or active flag (their sessions end)."""
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, "no such user")
    if target.id == admin.id and (body.active is False or
                                  (body.role is not None and body.role != "admin")):
        raise HTTPException(400, "you cannot disable yourself or drop your own admin role")
    changes = update_user(db, target, role=Role(body.role) if body.role else None,
                          active=body.active)
    if changes:
        audit.record(db, "user_update", actor=admin, object_type="user",
                     object_id=target.username, ip=client_ip(request), detail=changes)
    db.commit()
    return _user_out(target)


@router.get("/audit", response_model=list[AuditOut])
def audit_list(db: SessionDep, _admin: AdminUser,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
               action: Annotated[str | None, Query(max_length=48)] = None) -> list[AuditOut]:
    """Audit events, newest first."""
    return [AuditOut(id=e.id, at=e.at, actor=e.actor_name, role=e.actor_role, action=e.action,
                     object_type=e.object_type, object_id=e.object_id, ip=e.ip,
                     detail=e.detail)
            for e in audit.list_events(db, limit=limit, offset=offset, action=action)]


# ------------------------------------------------------------------------------ owner
@router.get("/uploads", response_model=list[UploadOut])
def uploads_list(db: SessionDep, owner: OwnerUser) -> list[UploadOut]:
    """The owner's uploads, newest first."""
    return [_upload_out(u) for u in db.scalars(
        select(Upload).where(Upload.owner_id == owner.id).order_by(Upload.id.desc()))]


@router.post("/uploads", response_model=UploadOut, status_code=202)
def uploads_create(request: Request, ctx: ContextDep, db: SessionDep, owner: OwnerUser,
                   file: Annotated[UploadFile, File()],
                   kind: Annotated[Literal["customers", "transactions"], Form()]
                   ) -> UploadOut:
    """Upload a customers or transactions file; validation and import run in the worker."""
    try:
        up = save_upload(ctx, db, owner, kind, file.filename or "upload", file.file,
                         ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(400, str(exc)) from None
    return _upload_out(up)


@router.get("/uploads/{upload_id}", response_model=UploadOut)
def uploads_get(upload_id: IdPath, db: SessionDep, owner: OwnerUser) -> UploadOut:
    """One upload's status and counts."""
    up = db.get(Upload, upload_id)
    if up is None or up.owner_id != owner.id:
        raise HTTPException(404, "no such upload")
    return _upload_out(up)


@router.get("/customers", response_model=list[CustomerOut])
def customers_list(db: SessionDep, owner: OwnerUser,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[CustomerOut]:
    """The owner's customers, phone numbers masked."""
    rows = db.scalars(select(Customer).where(Customer.owner_id == owner.id)
                      .order_by(Customer.id).limit(limit).offset(offset))
    return [CustomerOut(id=c.id, customer_id=c.external_id, pseudonym=c.pseudonym,
                        phone=c.phone_masked, consent=c.consent) for c in rows]


@router.delete("/customers/{customer_id}", status_code=204)
def customers_erase(request: Request, ctx: ContextDep, customer_id: IdPath, db: SessionDep,
                    owner: OwnerUser) -> Response:
    """Erase a customer and every row about them."""
    if not erase_customer(ctx, db, owner, customer_id, ip=client_ip(request)):
        raise HTTPException(404, "no such customer")
    return Response(status_code=204)


@router.get("/jobs", response_model=list[JobOut])
def jobs_list(db: SessionDep, owner: OwnerUser) -> list[JobOut]:
    """The owner's segmentations, newest first."""
    return [_job_out(db, j) for j in db.scalars(
        select(Job).where(Job.owner_id == owner.id, Job.kind == "segmentation")
        .order_by(Job.id.desc()).limit(100))]


@router.post("/jobs", response_model=JobOut, status_code=202)
def jobs_create(request: Request, ctx: ContextDep, body: JobCreate, db: SessionDep,
                owner: OwnerUser) -> JobOut:
    """Queue a segmentation."""
    try:
        job = start_segmentation(ctx, db, owner, k=body.k, features=list(body.features),
                                 scheme=body.scheme, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(400, str(exc)) from None
    return _job_out(db, job)


def _own_job(db: SessionDep, owner: User, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None or job.owner_id != owner.id or job.kind != "segmentation":
        raise HTTPException(404, "no such segmentation")
    return job


@router.get("/jobs/{job_id}", response_model=JobOut)
def jobs_get(request: Request, job_id: IdPath, db: SessionDep, owner: OwnerUser) -> JobOut:
    """A segmentation's status and (owner view) segments."""
    job = _own_job(db, owner, job_id)
    if job.status == "done":
        audit.record(db, "result_view", actor=owner, object_type="job", object_id=job.id,
                     ip=client_ip(request))
        db.commit()
    return _job_out(db, job)


@router.post("/jobs/{job_id}/publish", response_model=JobOut)
def jobs_publish(request: Request, job_id: IdPath, db: SessionDep, owner: OwnerUser) -> JobOut:
    """Release a finished segmentation to merchants and the operator."""
    job = _own_job(db, owner, job_id)
    if job.status != "done":
        raise HTTPException(409, "only a finished segmentation can be released")
    if not job.published:
        job.published = True
        audit.record(db, "job_publish", actor=owner, object_type="job", object_id=job.id,
                     ip=client_ip(request))
        db.commit()
    return _job_out(db, job)


# ------------------------------------------------------------------------------ others
@router.get("/releases", response_model=list[ReleaseOut])
def releases_list(request: Request, ctx: ContextDep, db: SessionDep,
                  user: ReleaseViewer) -> list[ReleaseOut]:
    """Released segments: merchants get profiles, the operator names and sizes."""
    data = releases(db, min_size=ctx.settings.min_segment_size,
                    with_profiles=user.role_enum == Role.MERCHANT)
    audit.record(db, "result_view", actor=user, object_type="releases", ip=client_ip(request))
    db.commit()
    return [ReleaseOut(job_id=r["job_id"], owner=r["owner"], released=r["released"],
                       segments=[SegmentOut(**d) for d in views_as_dicts(r["segments"])])
            for r in data]


@router.get("/centre/jobs", response_model=list[CentreJobOut])
def centre_jobs(db: SessionDep, _centre: CentreUser) -> list[CentreJobOut]:
    """The public schedule of segmentation jobs (sizes and status)."""
    out = []
    for j in db.scalars(select(Job).where(Job.kind == "segmentation")
                        .order_by(Job.id.desc()).limit(100)):
        r = j.result or {}
        out.append(CentreJobOut(id=j.id, status=j.status, k=j.params.get("k"),
                                n_features=len(j.params.get("features", [])),
                                n_customers=r.get("n_customers"), n_iter=r.get("n_iter"),
                                bytes_to_centre=r.get("bytes_to_centre")))
    return out
