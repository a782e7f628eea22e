"""Joint segmentation jobs: several owner accounts pool their customers with protocol 4.2.

Flow: an owner creates a job of kind ``joint`` naming the other participating owner accounts
and k; the job waits (status ``awaiting``, which the worker never claims) until **every** named
owner has accepted it on their own page; the last acceptance queues it. The worker then runs
:func:`cipherseg.protocols.joint.runner.run_joint_kmeans_processes`: the manager, the compute
centre and each owner are separate processes exchanging only protocol bytes, and each owner's
process reads **its own** transactions from the database and computes its RFM features there
(with ``CIPHERSEG_CENTRE_PROCESS=false`` every party runs in the worker process instead, one
trust domain, as for single-owner segmentations).

Features: recency (days before the end of the job's time window, common to all owners),
frequency (purchases) and monetary (average spend per purchase) of the purchases in the
window, each mapped by the public, data-independent ``log1p`` and quantised to the
fixed-point grid (10^-2). Owners do not standardise with their own statistics: the features
must be on one scale for all owners. The window is a date range, the last N days or all
history (:class:`~cipherseg.analytics.window.TimeWindow`); an open end is the latest purchase
day of all participants, so each owner's latest purchase day is disclosed to the job (only
the maximum is stored). Recency is never counted from the day the job runs.

Stored: one :class:`~cipherseg.platform.models.Segment` row per cluster (pooled size, the
released centroid mapped back to business units with ``expm1`` — the typical customer, the
same definition single-owner profiles use — and a name), one
:class:`~cipherseg.platform.models.SegmentMember` row per customer of every participant.
Each owner sees the released model and only its own customers' labels; merchants see the
released segments (once the creator releases them) under the minimum segment size rule.

>>> sorted(JOINT_FEATURES)
['frequency', 'monetary', 'recency']
>>> np.round(to_business_units(np.log1p([[10.0, 2.0, 35.5]])), 6).tolist()
[[10.0, 2.0, 35.5]]
"""

from __future__ import annotations

import functools
import json
import time
from datetime import date
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cipherseg.analytics.window import ResolvedWindow, TimeWindow
from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.pii.keys import PiiKeyring
from cipherseg.pii.vault import PiiVault
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
from cipherseg.platform.jobs import ProgressSink, enqueue
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
from cipherseg.platform.permissions import Permission
from cipherseg.platform.routes.common import parse_window, redirect, render
from cipherseg.platform.segments import owner_view
from cipherseg.platform.services import grants, releases

#: The background job kinds this extension adds (``create_app`` registers them).
job_kinds = (JobKind.JOINT,)

JOINT_FEATURES = ("recency", "frequency", "monetary")
DECIMALS = 2
MAX_ITER = 100
MAX_OWNERS = 7
AWAITING = JobStatus.AWAITING


def to_business_units(centroids: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Centroids in ``log1p`` space back to days, purchases and money (``expm1``)."""
    return np.expm1(np.asarray(centroids, dtype=np.float64))


# ------------------------------------------------------------------------------ features
def owner_features(vault: PiiVault, session: Session, owner_id: int, window: ResolvedWindow
                   ) -> tuple[list[str], npt.NDArray[np.float64]]:
    """One owner's customers (pseudonyms, sorted) and their quantised ``log1p`` RFM features.

    Only the owner's own transactions are read; those in ``window`` count, and recency is
    measured from the window's end (common to all owners).
    """
    from cipherseg.encoding import FixedPointEncoder
    from cipherseg.platform.segmentation import load_transactions, window_features

    tx = load_transactions(vault, session, owner_id)
    if tx.empty or window.select(tx, "date").empty:
        return [], np.zeros((0, len(JOINT_FEATURES)))
    feats = window_features(tx, window).loc[:, list(JOINT_FEATURES)].sort_index()
    X = FixedPointEncoder(DECIMALS).quantise(np.log1p(feats.to_numpy(np.float64)))
    return [str(p) for p in feats.index], np.asarray(X, dtype=np.float64)


def owners_latest_day(vault: PiiVault, session: Session, owner_ids: list[int]) -> date:
    """The latest purchase day of all participants (each contributes its own latest day)."""
    from cipherseg.platform.segmentation import latest_day, load_transactions

    found = []
    for oid in owner_ids:
        tx = load_transactions(vault, session, oid)
        if not tx.empty:
            found.append(latest_day(tx))
    if not found:
        raise ValidationError("no participant has transactions; every participant must "
                              "upload data first")
    return max(found)


def _owner_process_data(database_url: str, keyring: PiiKeyring, owner_ids: list[int],
                        window: str, party_id: int) -> npt.NDArray[np.float64]:
    """Runs inside owner ``party_id``'s process: reads only that owner's rows."""
    import json

    from cipherseg.platform.db import make_engine, make_sessionmaker

    bounds = json.loads(window)
    resolved = ResolvedWindow(date.fromisoformat(bounds["start"]) if bounds["start"] else None,
                              date.fromisoformat(bounds["end"]))
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as s:
            _, X = owner_features(PiiVault(keyring), s, owner_ids[party_id - 1], resolved)
    finally:
        engine.dispose()
    return X


# ------------------------------------------------------------------------------ services
def participants(job: Job) -> list[int]:
    return [int(i) for i in job.params.get("participants", [])]


def accepted(job: Job) -> list[int]:
    return [int(i) for i in job.params.get("accepted", [])]


def create_joint_job(session: Session, creator: User, *, others: list[int], k: int,
                     max_k: int, window: TimeWindow | None = None,
                     ip: str | None = None) -> Job:
    """Validate and create a joint job awaiting the other owners' consent (commits)."""
    other_ids = sorted({int(i) for i in others} - {creator.id})
    if not other_ids:
        raise ValidationError("name at least one other data owner account to segment with")
    if len(other_ids) + 1 > MAX_OWNERS:
        raise ValidationError(f"at most {MAX_OWNERS} owners can take part in one joint job")
    if not 2 <= k <= max_k:
        raise ValidationError(f"k must be between 2 and {max_k}")
    found = set(session.scalars(select(User.id).where(
        User.id.in_(other_ids), User.role == Role.OWNER.value, User.active.is_(True))))
    if found != set(other_ids):
        raise ValidationError("every participant must be an active data owner account")
    if session.scalar(select(Customer.id).where(Customer.owner_id == creator.id)
                      .limit(1)) is None:
        raise ValidationError("upload customers and their transactions first")
    window = window or TimeWindow()
    job = enqueue(session, JobKind.JOINT, owner=creator, params={
        "k": k, "participants": [creator.id, *other_ids], "accepted": [creator.id],
        "features": list(JOINT_FEATURES), "window": window.to_dict(), "decimals": DECIMALS})
    job.status, job.stage = AWAITING.value, "waiting for every owner to accept"
    audit.record(session, "joint_create", actor=creator, object_type="job", object_id=job.id,
                 ip=ip, detail={"k": k, "participants": [creator.id, *other_ids],
                                "window": window.label()})
    session.commit()
    return job


def accept_joint_job(session: Session, owner: User, job: Job, *,
                     ip: str | None = None) -> None:
    """Record ``owner``'s consent; the last consent queues the job (commits)."""
    if job.status != AWAITING:
        raise HTTPException(409, "this joint job is not waiting for consent any more")
    if owner.id in accepted(job):
        return
    now_accepted = [*accepted(job), owner.id]
    params = {**job.params, "accepted": now_accepted}
    values: dict[str, Any] = {"params": params}
    ready = set(now_accepted) == set(participants(job))
    if ready:
        values.update(status=JobStatus.QUEUED.value, stage="queued")
    res = session.execute(update(Job).where(Job.id == job.id, Job.status == AWAITING.value)
                          .values(**values))
    if res.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise HTTPException(409, "this joint job changed meanwhile; reload the page")
    audit.record(session, "joint_accept", actor=owner, object_type="job", object_id=job.id,
                 ip=ip, detail={"all_accepted": ready})
    session.commit()


# ------------------------------------------------------------------------------ runner
def run_joint_job(ctx: PlatformContext, job_id: int, sink: ProgressSink) -> None:
    """The worker's runner for ``joint`` jobs."""
    from cipherseg.analytics.rfm import segment_names
    from cipherseg.platform.segmentation import _num, centre_account
    from cipherseg.protocols.joint.runner import run_joint_kmeans, run_joint_kmeans_processes

    started = time.perf_counter()
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        owner_ids, k = participants(job), int(job.params["k"])
        if set(accepted(job)) != set(owner_ids):
            raise ValidationError("not every participant has accepted this joint job")
        users = {u.id: u for u in s.scalars(select(User).where(User.id.in_(owner_ids)))}
        if any(u.role != Role.OWNER.value or not u.active for u in users.values()) or \
                len(users) != len(owner_ids):
            raise ValidationError("a participant's account is disabled or no longer a data "
                                  "owner; start a new joint job")
        centre_name = centre_account(s, ctx.settings.centre_account).username
        window = TimeWindow.from_dict(job.params.get("window")).resolve(
            owners_latest_day(ctx.vault, s, owner_ids))
        creator = users[job.owner_id]
        audit.record(s, "joint_start", actor=creator, object_type="job", object_id=job_id,
                     detail={"participants": owner_ids, "k": k, "centre": centre_name})
        s.commit()
    sink.update(0.05, "computing each owner's RFM features", force=True)
    pseudonyms: list[list[str]] = []
    local_parts: list[npt.NDArray[np.float64]] = []
    with ctx.sessions() as s:
        for oid in owner_ids:
            # the customers' order; in process mode each owner's process recomputes its own
            # features (only its labels come back), so the worker uses just the pseudonyms
            names, X = owner_features(ctx.vault, s, oid, window)
            pseudonyms.append(names)
            local_parts.append(X)
    for oid, names in zip(owner_ids, pseudonyms, strict=True):
        if not names:
            raise ValidationError(f"owner {users[oid].username} has no customers with "
                                  f"purchases in the window ({window.label()}); every "
                                  "participant must have data in it")
    if sum(len(p) for p in pseudonyms) < k:
        raise ValidationError(f"the owners' customers cannot form {k} segments; lower k")

    def progress(stage: str, done: int, total: int) -> None:
        frac = {"keygen": 0.1, "init": 0.2, "iterations": 0.3}.get(stage, 0.9)
        if stage == "iterations" and total:
            frac = 0.3 + 0.6 * done / total
        sink.update(frac, f"joint k-means: {stage} {done}/{total}")

    t = time.perf_counter()
    if ctx.settings.centre_process:
        data = functools.partial(_owner_process_data, ctx.settings.resolved_database_url(),
                                 ctx.vault.keyring, owner_ids, json.dumps(window.to_dict()))
        result = run_joint_kmeans_processes(data, len(owner_ids), len(JOINT_FEATURES), k,
                                            max_iter=MAX_ITER, decimals=DECIMALS,
                                            progress=progress)
        where = "manager, centre and each owner in separate processes"
    else:
        result = run_joint_kmeans(local_parts, k, max_iter=MAX_ITER, decimals=DECIMALS)
        where = "every party in the worker process"
    seconds_protocol = time.perf_counter() - t
    for names, labels in zip(pseudonyms, result.labels, strict=True):
        if len(names) != len(labels):
            raise ValidationError("an owner's data changed while the joint job ran; run it "
                                  "again")
    sizes = np.bincount(np.concatenate(result.labels), minlength=k)
    centres = to_business_units(result.centroids)
    profile = pd.DataFrame(centres, columns=list(JOINT_FEATURES))
    seg_names = segment_names(profile)
    sink.update(0.95, "storing results", force=True)
    with ctx.sessions() as s, sink.pause_if_sqlite():
        from sqlalchemy import delete

        s.execute(delete(SegmentMember).where(SegmentMember.job_id == job_id))
        s.execute(delete(Segment).where(Segment.job_id == job_id))
        for i in range(k):
            row = profile.iloc[i]
            s.add(Segment(job_id=job_id, position=i, name=seg_names[i], size=int(sizes[i]),
                          centroid={"recency_days": _num(row["recency"]),
                                    "frequency": _num(row["frequency"]),
                                    "monetary": _num(row["monetary"])}))
        per_owner: dict[str, int] = {}
        for oid, names, labels in zip(owner_ids, pseudonyms, result.labels, strict=True):
            ids = dict(s.execute(select(Customer.pseudonym, Customer.id)
                                 .where(Customer.owner_id == oid)).all())
            members = [{"job_id": job_id, "customer_id": ids[p], "pseudonym": p,
                        "segment_index": int(lab)}
                       for p, lab in zip(names, labels, strict=True) if p in ids]
            for start in range(0, len(members), 5000):
                s.execute(insert(SegmentMember), members[start:start + 5000])
            per_owner[str(oid)] = len(members)
        res = {"n_customers": int(sizes.sum()), "customers_per_owner": per_owner,
               "n_iter": int(result.n_iter), "where": where, "centre": centre_name,
               "centroids_log1p": np.round(result.centroids, 6).tolist(),
               "init_centres_log1p": np.round(result.init_centres, 6).tolist(),
               "bytes_per_party_per_iteration": {
                   p: round(b, 1) for p, b in result.bytes_per_party_per_iteration().items()},
               "seconds": time.perf_counter() - started, "seconds_protocol": seconds_protocol,
               "features": list(JOINT_FEATURES), "decimals": DECIMALS,
               "window": {**window.to_dict(), "label": window.label()}}
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.DONE.value, progress=1.0, stage="done", result=res,
            finished_at=utcnow(), heartbeat_at=utcnow()))
        audit.record(s, "joint_finish", actor=creator, object_type="job", object_id=job_id,
                     detail={"customers": int(sizes.sum()), "k": k,
                             "n_iter": int(result.n_iter), "owners": len(owner_ids)})
        s.commit()


def runners(ctx: PlatformContext) -> dict[str, Any]:
    """Background job kinds of this extension."""

    from cipherseg.platform.segmentation import audited_runner

    return {"joint": audited_runner(ctx, functools.partial(run_joint_job, ctx))}


# ------------------------------------------------------------------------------ pages
router = APIRouter(include_in_schema=False)
nav = (("/owner/joint", "Joint segmentation", Permission.JOINT_RUN),
       ("/merchant/joint", "Joint segments", Permission.RELEASE_VIEW))


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
        audit.record(db, "result_view", actor=owner, object_type="job", object_id=job.id,
                     ip=client_ip(request))
        db.commit()
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
