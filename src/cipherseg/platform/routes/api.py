"""The JSON API (``/api/v1``): the same operations as the pages, for scripts.

Authentication is the session cookie from ``POST /login``; state-changing calls need the
session's CSRF token in the ``X-CSRF-Token`` header (``GET /api/v1/me`` returns it).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cipherseg.analytics.window import TimeWindow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.deps import (
    AnyUserChangingPassword,
    AudienceViewer,
    AuditReader,
    CentreScheduleViewer,
    ContextDep,
    CustomerEraser,
    CustomerReader,
    DataUploader,
    IdPath,
    ReleaseViewer,
    RequestCreator,
    RequestDecider,
    SegmentReleaser,
    SegmentRunner,
    SessionDep,
    UserManager,
    client_ip,
)
from cipherseg.platform.models import Customer, Job, JobKind, JobStatus, Role, Segment, Upload, User
from cipherseg.platform.permissions import PERMISSIONS, Permission
from cipherseg.platform.routes.auth import set_session_cookie
from cipherseg.platform.routes.common import own_job_or_404
from cipherseg.platform.routes.views import merchant_releases, operator_releases
from cipherseg.platform.security import open_session
from cipherseg.platform.segments import owner_view, views_as_dicts
from cipherseg.platform.services import grants, releases
from cipherseg.platform.services import jobs as jobs_service
from cipherseg.platform.services import permissions as matrix_service
from cipherseg.platform.services import requests as requests_service
from cipherseg.platform.services.customers import erase_customer
from cipherseg.platform.services.segmentation import FEATURES, start_segmentation
from cipherseg.platform.services.uploads import save_upload
from cipherseg.platform.services.users import (
    change_password,
    create_user,
    parse_role,
    reset_password,
    update_user,
)


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


PermissionName = Literal[tuple(p.value for p in Permission)]  # type: ignore[valid-type]
RequestStatusName = Literal["pending", "running", "failed", "released", "revoked", "declined",
                            "withdrawn"]


class MeOut(BaseModel):
    username: str
    role: RoleName
    csrf_token: str
    permissions: list[PermissionName]  # type: ignore[valid-type]
    must_change_password: bool


class PasswordChange(BaseModel):
    current_password: str | None = Field(default=None, max_length=1024, description=(
        "required unless a temporary password is in force"))
    new_password: str = Field(min_length=10, max_length=1024)


class TemporaryPasswordOut(BaseModel):
    username: str
    temporary_password: str = Field(description="shown once; works for one login")
    expires_at: datetime


class PermissionsOut(BaseModel):
    matrix: dict[RoleName, list[PermissionName]]  # type: ignore[valid-type]
    eligible: dict[PermissionName, list[RoleName]]  # type: ignore[valid-type]


class PermissionsIn(BaseModel):
    matrix: dict[RoleName, list[PermissionName]]  # type: ignore[valid-type]


class UserOut(BaseModel):
    id: int
    username: str
    role: RoleName
    active: bool
    must_change_password: bool
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
    profile: dict[str, float | None] | None


class JobCreate(BaseModel):
    #: ``null``: run k = 2..8 through the encrypted protocol and keep the recommended k.
    k: int | None = Field(ge=2, le=64)
    features: list[Literal["recency", "frequency", "monetary", "categories"]] = Field(
        default=["recency", "frequency", "monetary"], min_length=1, max_length=4)
    #: How many of the owner's top categories (by spend) the "categories" feature covers.
    top_categories: int = Field(default=3, ge=1, le=8)
    #: The purchases' time window: a date range (either end open) or the last N days of the
    #: data; recency counts from the window's end. None of them: all history.
    window_from: date | None = None
    window_to: date | None = None
    window_days: int | None = Field(default=None, ge=1, le=3650)
    scheme: Literal["ckks"] = "ckks"


class JobOut(BaseModel):
    id: int = Field(description="the owner's segmentation number (1, 2, ...)")
    status: str
    stage: str
    progress: float
    params: dict[str, Any]
    released_to: list[str] = Field(description="merchants the segmentation is granted to")
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    result: dict[str, Any] | None
    segments: list[SegmentOut] = []


class PublishIn(BaseModel):
    merchants: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=200)


class ReleaseOut(BaseModel):
    job_id: int = Field(description="the owner's segmentation number")
    kind: Literal["segmentation", "joint"]
    owner: str
    released: str
    segments: list[SegmentOut]


class AudienceOut(ReleaseOut):
    merchants: list[str]


class RequestIn(BaseModel):
    owner: str = Field(min_length=1, max_length=64)
    purpose: str = Field(min_length=1, max_length=500)
    k: int | None = Field(default=None, ge=2, le=64, description="null: the owner's run chooses")
    features: list[str] = Field(default=["recency", "frequency", "monetary"], min_length=1,
                                max_length=16)
    window_from: date | None = None
    window_to: date | None = None
    window_days: int | None = Field(default=None, ge=1, le=3650)


class RequestOut(BaseModel):
    id: int
    merchant: str
    owner: str
    purpose: str
    k: int | None
    features: list[str]
    window: str
    status: RequestStatusName
    status_label: str
    reason: str | None
    segmentation: int | None = Field(description="the owner's segmentation number, once "
                                                 "approved")
    created_at: datetime
    decided_at: datetime | None


class ApproveIn(BaseModel):
    k: int | None = Field(default=None, ge=2, le=64, description=(
        "required when the merchant left k to the owner"))


class DeclineIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class RequestCountsOut(BaseModel):
    pending: int
    approved: int
    declined: int
    withdrawn: int


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
                   must_change_password=u.must_change_password, created_at=u.created_at)


def _upload_out(u: Upload) -> UploadOut:
    return UploadOut(id=u.number, kind=u.kind, filename=u.filename, status=u.status,
                     rows_total=u.rows_total, rows_done=u.rows_done, n_errors=u.n_errors,
                     n_inserted=u.n_inserted, n_updated=u.n_updated, n_unchanged=u.n_unchanged,
                     message=u.message, created_at=u.created_at)


def _job_out(db: SessionDep, job: Job) -> JobOut:
    segs = list(db.scalars(select(Segment).where(Segment.job_id == job.id)))
    return JobOut(id=job.number, status=job.status, stage=job.stage, progress=job.progress,
                  params=job.params, released_to=grants.grantees(db, job.id), error=job.error,
                  created_at=job.created_at, finished_at=job.finished_at, result=job.result,
                  segments=[SegmentOut(**d) for d in views_as_dicts(owner_view(segs))])


# ------------------------------------------------------------------------------ everyone
def _request_out(v: requests_service.RequestView) -> RequestOut:
    r = v.req
    return RequestOut(id=r.id, merchant=v.merchant, owner=v.owner, purpose=r.purpose, k=r.k,
                      features=list(r.features), window=v.window,
                      status=v.status,  # type: ignore[arg-type]
                      status_label=v.status_label, reason=r.reason, segmentation=v.job_number,
                      created_at=r.created_at, decided_at=r.decided_at)


def _bad_request(exc: ValidationError) -> HTTPException:
    return HTTPException(400, str(exc))


@router.get("/me", response_model=MeOut)
def me(request: Request, user: AnyUserChangingPassword) -> MeOut:
    """Who is logged in, their permissions, and the CSRF token for state-changing calls."""
    return MeOut(username=user.username, role=user.role,  # type: ignore[arg-type]
                 csrf_token=request.state.web_session.csrf_token,
                 permissions=sorted(p.value for p in request.state.permissions),
                 must_change_password=user.must_change_password)


@router.post("/me/password", status_code=204)
def me_password(request: Request, ctx: ContextDep, body: PasswordChange, db: SessionDep,
                user: AnyUserChangingPassword) -> Response:
    """Change one's own password (the current one is required unless a temporary password
    is in force). Every session ends; the response carries a new session cookie (read the
    new CSRF token from ``GET /api/v1/me``)."""
    forced = user.must_change_password
    try:
        change_password(db, user, body.new_password, current=body.current_password)
    except ValidationError as exc:
        db.rollback()
        raise _bad_request(exc) from None
    audit.record(db, "password_change", actor=user, ip=client_ip(request),
                 detail={"after_reset": forced})
    token = open_session(db, user, ctx.settings.session_hours)[0]
    db.commit()
    response = Response(status_code=204)
    set_session_cookie(request, ctx, response, token)
    return response


# ------------------------------------------------------------------------------ admin
@router.get("/users", response_model=list[UserOut])
def users_list(db: SessionDep, _admin: UserManager) -> list[UserOut]:
    """All users."""
    return [_user_out(u) for u in db.scalars(select(User).order_by(User.id))]


@router.post("/users", response_model=UserOut, status_code=201)
def users_create(request: Request, body: UserCreate, db: SessionDep,
                 admin: UserManager) -> UserOut:
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
                admin: UserManager) -> UserOut:
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


@router.post("/users/{user_id}/reset-password", response_model=TemporaryPasswordOut)
def users_reset_password(request: Request, ctx: ContextDep, user_id: IdPath, db: SessionDep,
                         admin: UserManager) -> TemporaryPasswordOut:
    """A one-time temporary password (must be changed at the next login); ends the user's
    sessions. Not for one's own account (``POST /api/v1/me/password``)."""
    target = db.get(User, user_id)
    if target is None:
        raise HTTPException(404, "no such user")
    if target.id == admin.id:
        raise HTTPException(400, "change your own password with POST /api/v1/me/password")
    password, expires = reset_password(db, target, hours=ctx.settings.temp_password_hours)
    audit.record(db, "password_reset", actor=admin, object_type="user",
                 object_id=target.username, ip=client_ip(request),
                 detail={"expires": expires.isoformat(timespec="minutes")})
    db.commit()
    return TemporaryPasswordOut(username=target.username, temporary_password=password,
                                expires_at=expires)


def _permissions_out(db: SessionDep) -> PermissionsOut:
    m = matrix_service.matrix(db)
    return PermissionsOut(
        matrix={r.value: sorted(p.value for p in m[r]) for r in Role},
        eligible={p.value: sorted(r.value for r in info.eligible)
                  for p, info in PERMISSIONS.items()})


@router.get("/permissions", response_model=PermissionsOut)
def permissions_get(db: SessionDep, _admin: UserManager) -> PermissionsOut:
    """The permission matrix and, per permission, the roles eligible to hold it."""
    return _permissions_out(db)


@router.put("/permissions", response_model=PermissionsOut)
def permissions_put(request: Request, body: PermissionsIn, db: SessionDep,
                    admin: UserManager) -> PermissionsOut:
    """Replace the matrix (every role; a role left out holds nothing). Guard rails: a
    permission only for its eligible roles; the admin role keeps users.manage."""
    wanted = {Role(r): {Permission(p) for p in perms} for r, perms in body.matrix.items()}
    try:
        matrix_service.save_matrix(db, admin, wanted, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise _bad_request(exc) from None
    return _permissions_out(db)


@router.get("/audit", response_model=list[AuditOut])
def audit_list(db: SessionDep, _reader: AuditReader,
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
def uploads_list(db: SessionDep, owner: DataUploader) -> list[UploadOut]:
    """The owner's uploads, newest first."""
    return [_upload_out(u) for u in db.scalars(
        select(Upload).where(Upload.owner_id == owner.id).order_by(Upload.id.desc()))]


@router.post("/uploads", response_model=UploadOut, status_code=202)
def uploads_create(request: Request, ctx: ContextDep, db: SessionDep, owner: DataUploader,
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


@router.get("/uploads/{number}", response_model=UploadOut)
def uploads_get(number: IdPath, db: SessionDep, owner: DataUploader) -> UploadOut:
    """One upload's status and counts (by the owner's upload number)."""
    up = db.scalar(select(Upload).where(Upload.owner_id == owner.id, Upload.number == number))
    if up is None:
        raise HTTPException(404, "no such upload")
    return _upload_out(up)


@router.get("/customers", response_model=list[CustomerOut])
def customers_list(db: SessionDep, owner: CustomerReader,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> list[CustomerOut]:
    """The owner's customers, phone numbers masked."""
    rows = db.scalars(select(Customer).where(Customer.owner_id == owner.id)
                      .order_by(Customer.id).limit(limit).offset(offset))
    return [CustomerOut(id=c.id, customer_id=c.external_id, pseudonym=c.pseudonym,
                        phone=c.phone_masked, consent=c.consent) for c in rows]


@router.delete("/customers/{customer_id}", status_code=204)
def customers_erase(request: Request, ctx: ContextDep, customer_id: IdPath, db: SessionDep,
                    owner: CustomerEraser) -> Response:
    """Erase a customer and every row about them."""
    if not erase_customer(ctx, db, owner, customer_id, ip=client_ip(request)):
        raise HTTPException(404, "no such customer")
    return Response(status_code=204)


@router.get("/jobs", response_model=list[JobOut])
def jobs_list(db: SessionDep, owner: SegmentRunner) -> list[JobOut]:
    """The owner's segmentations, newest first."""
    return [_job_out(db, j) for j in db.scalars(
        select(Job).where(Job.owner_id == owner.id, Job.kind == JobKind.SEGMENTATION.value)
        .order_by(Job.id.desc()).limit(100))]


@router.post("/jobs", response_model=JobOut, status_code=202)
def jobs_create(request: Request, ctx: ContextDep, body: JobCreate, db: SessionDep,
                owner: SegmentRunner) -> JobOut:
    """Queue a segmentation."""
    try:
        window = TimeWindow(start=body.window_from, end=body.window_to, days=body.window_days)
        job = start_segmentation(ctx, db, owner, k=body.k, features=list(body.features),
                                 scheme=body.scheme, window=window,
                                 top_categories=body.top_categories, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(400, str(exc)) from None
    return _job_out(db, job)


@router.get("/jobs/{job_id}", response_model=JobOut)
def jobs_get(request: Request, job_id: IdPath, db: SessionDep, owner: SegmentRunner) -> JobOut:
    """A segmentation's status and (owner view) segments, by the owner's number."""
    job = own_job_or_404(db, owner, JobKind.SEGMENTATION, job_id)
    jobs_service.record_result_view(db, owner, job, ip=client_ip(request))
    return _job_out(db, job)


@router.post("/jobs/{job_id}/publish", response_model=JobOut)
def jobs_publish(request: Request, job_id: IdPath, body: PublishIn, db: SessionDep,
                 owner: SegmentReleaser) -> JobOut:
    """Release a finished segmentation to the named merchants (grants; audited). Granting
    again to a merchant that has it changes nothing."""
    job = own_job_or_404(db, owner, JobKind.SEGMENTATION, job_id)
    if job.status != JobStatus.DONE:
        raise HTTPException(409, "only a finished segmentation can be released")
    try:
        releases.publish(db, owner, job, body.merchants, ip=client_ip(request))
    except ValidationError as exc:
        raise _bad_request(exc) from None
    return _job_out(db, job)


@router.delete("/releases/{job_id}/merchants/{name}", status_code=204)
def releases_revoke(request: Request, ctx: ContextDep, job_id: IdPath,
                    name: Annotated[str, Path(min_length=1, max_length=64)], db: SessionDep,
                    owner: SegmentReleaser) -> Response:
    """Revoke the release of the owner's segmentation ``job_id`` to merchant ``name``: the
    merchant no longer sees it and its campaigns' queued messages are not sent."""
    job = own_job_or_404(db, owner, JobKind.SEGMENTATION, job_id)
    try:
        grants.revoke(ctx, db, owner, job, name, ip=client_ip(request))
    except LookupError:
        raise HTTPException(404, "this segmentation is not released to that merchant") from None
    return Response(status_code=204)


# ------------------------------------------------------------------------------ merchants
def _release_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": row["job_id"], "kind": row["kind"], "owner": row["owner"],
            "released": row["released"],
            "segments": [SegmentOut(**d) for d in views_as_dicts(row["segments"])]}


@router.get("/releases", response_model=list[ReleaseOut])
def releases_list(request: Request, ctx: ContextDep, db: SessionDep,
                  merchant: ReleaseViewer) -> list[ReleaseOut]:
    """The segmentations released to the caller (its grants), with profiles."""
    data = merchant_releases(db, merchant, min_size=ctx.settings.min_segment_size)
    audit.record(db, "result_view", actor=merchant, object_type="releases",
                 object_id=",".join(str(r["job"].id) for r in data)[:64] or None,
                 ip=client_ip(request))
    db.commit()
    return [ReleaseOut(**_release_out(r)) for r in data]


@router.get("/requests", response_model=list[RequestOut])
def requests_list(db: SessionDep, merchant: RequestCreator) -> list[RequestOut]:
    """The caller's segmentation requests, newest first."""
    return [_request_out(v) for v in requests_service.for_merchant(db, merchant)]


@router.post("/requests", response_model=RequestOut, status_code=201)
def requests_create(request: Request, ctx: ContextDep, body: RequestIn, db: SessionDep,
                    merchant: RequestCreator) -> RequestOut:
    """Ask a data owner for a segmentation."""
    form = requests_service.RequestForm(
        owner=body.owner, purpose=body.purpose, k=body.k, features=list(body.features),
        window_from=body.window_from, window_to=body.window_to, window_days=body.window_days)
    try:
        req = requests_service.create(ctx, db, merchant, form, features=list(FEATURES),
                                      ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise _bad_request(exc) from None
    return _request_out(requests_service.views(db, [req])[0])


@router.post("/requests/{request_id}/withdraw", response_model=RequestOut)
def requests_withdraw(request: Request, request_id: IdPath, db: SessionDep,
                      merchant: RequestCreator) -> RequestOut:
    """Withdraw a request the owner has not decided yet."""
    try:
        req = requests_service.merchant_request(db, merchant, request_id)
    except LookupError:
        raise HTTPException(404, "no such request") from None
    try:
        requests_service.withdraw(db, merchant, req, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise HTTPException(409, str(exc)) from None
    return _request_out(requests_service.views(db, [req])[0])


# ------------------------------------------------------------------------------ owners
@router.get("/incoming-requests", response_model=list[RequestOut])
def incoming_list(db: SessionDep, owner: RequestDecider) -> list[RequestOut]:
    """Requests addressed to the caller (a data owner), waiting ones first."""
    return [_request_out(v) for v in requests_service.for_owner(db, owner)]


def _incoming(db: SessionDep, owner: User, request_id: int) -> Any:
    try:
        return requests_service.owner_request(db, owner, request_id)
    except LookupError:
        raise HTTPException(404, "no such request") from None


@router.post("/incoming-requests/{request_id}/approve", response_model=RequestOut)
def incoming_approve(request: Request, ctx: ContextDep, request_id: IdPath, body: ApproveIn,
                     db: SessionDep, owner: RequestDecider) -> RequestOut:
    """Approve: the segmentation is queued and released to the merchant when it finishes."""
    req = _incoming(db, owner, request_id)
    try:
        requests_service.approve(ctx, db, owner, req, k=body.k, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise (HTTPException(409, str(exc)) if req.status != "pending"
               else _bad_request(exc)) from None
    return _request_out(requests_service.views(db, [req])[0])


@router.post("/incoming-requests/{request_id}/decline", response_model=RequestOut)
def incoming_decline(request: Request, request_id: IdPath, body: DeclineIn, db: SessionDep,
                     owner: RequestDecider) -> RequestOut:
    """Decline with a reason the merchant reads."""
    req = _incoming(db, owner, request_id)
    try:
        requests_service.decline(db, owner, req, body.reason, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        raise (HTTPException(409, str(exc)) if req.status != "pending"
               else _bad_request(exc)) from None
    return _request_out(requests_service.views(db, [req])[0])


# ------------------------------------------------------------------------------ operator
@router.get("/audiences", response_model=list[AudienceOut])
def audiences(request: Request, ctx: ContextDep, db: SessionDep,
              operator: AudienceViewer) -> list[AudienceOut]:
    """Every released segmentation: segment names and sizes, and the merchants it is
    released to."""
    data = operator_releases(db, min_size=ctx.settings.min_segment_size)
    audit.record(db, "result_view", actor=operator, object_type="audiences",
                 ip=client_ip(request))
    db.commit()
    return [AudienceOut(**_release_out(r), merchants=r["merchants"]) for r in data]


@router.get("/request-counts", response_model=RequestCountsOut)
def request_counts(db: SessionDep, _operator: AudienceViewer) -> RequestCountsOut:
    """How many segmentation requests there are per decision (never their content)."""
    return RequestCountsOut(**requests_service.counts(db))


@router.get("/centre/jobs", response_model=list[CentreJobOut])
def centre_jobs(db: SessionDep, _centre: CentreScheduleViewer) -> list[CentreJobOut]:
    """The public schedule of segmentation jobs (sizes and status)."""
    out = []
    for j in db.scalars(select(Job).where(Job.kind == JobKind.SEGMENTATION.value)
                        .order_by(Job.id.desc()).limit(100)):
        r = j.result or {}
        out.append(CentreJobOut(id=j.id, status=j.status, k=j.params.get("k"),
                                n_features=len(j.params.get("features", [])),
                                n_customers=r.get("n_customers"), n_iter=r.get("n_iter"),
                                bytes_to_centre=r.get("bytes_to_centre")))
    return out
