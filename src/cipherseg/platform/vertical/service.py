"""Vertical segmentation across organisations on nodes (issue 20; protocol 4.5): the mall's
purchases (RFM, computed on this platform from this platform's database) and a merchant's
own columns (computed and encrypted on the merchant's machine by ``cipherseg vertical join``)
on their shared customers. The merchant's columns never reach this platform: only the
services see its blinded PSI points and ciphertexts under the manager's key.

Flow: a merchant of this platform **requests** (``request_vertical``: which owner, the name
of its node at the services, its column names, k); the owner **approves**
(``approve_request``: the time window; the terms are fixed then, with a fresh session) or
declines; approval queues this platform's ``vertical_node`` job, which joins the session at
the manager service and waits for the merchant's node. The merchant fetches the terms
(``terms_for``) and runs ``cipherseg vertical join`` with them on its machine. When the
manager releases the model, the job stores the shared customers' segments (this platform's
customers only; the intersection and labels are what protocol 4.5 gives each holder) and
the joint centroids; the owner releases them under this platform's grants, and they work in
campaigns like any other released segmentation (minimum segment size, opt-outs).

A node that stops, a refusal or the merchant never joining ends the session on both sides
with the reason; nothing is stored or released.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ParameterError, ValidationError
from cipherseg.nodes.vertical_terms import VerticalTerms
from cipherseg.platform import audit
from cipherseg.platform.deps import PlatformContext
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
from cipherseg.platform.nodes.jobs import (
    FEATURES,
    MAX_WINDOW_DAYS,
    _latest_purchase,
    _withdraw,
    node_config,
    node_features,
)
from cipherseg.transport.tokens import OWNER_NAME, read_token_file

KIND = JobKind.VERTICAL_NODE
REQUESTED, DECLINED = JobStatus.REQUESTED, JobStatus.DECLINED
MAX_ITER = 100
MAX_MERCHANT_COLUMNS = 8


def _column_names(columns: list[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(c.strip() for c in columns if c.strip()))
    if not 1 <= len(names) <= MAX_MERCHANT_COLUMNS or not all(
            OWNER_NAME.fullmatch(c) for c in names):
        raise ValidationError(f"name 1-{MAX_MERCHANT_COLUMNS} columns of your data (letters, "
                              "digits, '.', '_' or '-')")
    if set(names) & set(FEATURES):
        raise ValidationError(f"your column names must differ from the mall's "
                              f"({', '.join(FEATURES)})")
    return names


def request_vertical(ctx: PlatformContext, db: Session, merchant: User, *, owner_name: str,
                     node: str, columns: list[str], k: int, note: str = "",
                     ip: str | None = None) -> Job:
    """A merchant asks an owner of this platform for a vertical segmentation (commits)."""
    owner = db.scalar(select(User).where(User.username == owner_name.strip(),
                                         User.role == Role.OWNER.value, User.active.is_(True)))
    if owner is None:
        raise ValidationError(f"there is no data owner called {owner_name.strip()[:64]!r}")
    cfg = node_config(ctx.settings)
    node = node.strip()
    if not OWNER_NAME.fullmatch(node) or node == cfg.name:
        raise ValidationError("name your node as the services know it (not this platform's "
                              f"node {cfg.name})")
    names = _column_names(columns)
    if not 2 <= k <= ctx.settings.max_k:
        raise ValidationError(f"k must be between 2 and {ctx.settings.max_k}")
    job = enqueue(db, KIND, owner=owner, created_by=merchant, stage="awaiting the owner",
                  params={"merchant": merchant.username, "merchant_node": node,
                          "merchant_columns": list(names), "k": k, "note": note[:500],
                          "nodes": [cfg.name, node]})
    job.status = REQUESTED.value
    audit.record(db, "request_create", actor=merchant, object_type="job", object_id=job.id,
                 ip=ip, detail={"owner": owner.username, "node": node, "k": k})
    db.commit()
    return job


def approve_request(ctx: PlatformContext, db: Session, owner: User, job: Job, *,
                    window_days: int = 365, ip: str | None = None) -> VerticalTerms:
    """The owner approves: the terms are fixed and this platform's job is queued (commits)."""
    if job.status != REQUESTED:
        raise ValidationError(f"this request is {job.status}; only a waiting one can be "
                              "approved")
    if not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise ValidationError(f"the time window is 1 to {MAX_WINDOW_DAYS} days")
    cfg = node_config(ctx.settings)
    latest = _latest_purchase(ctx.vault, db, owner)
    if latest is None:
        raise ValidationError("upload customers and their transactions first")
    snapshot = latest + timedelta(days=1)
    p = job.params
    terms = VerticalTerms(
        session=uuid.uuid4().hex, nodes=(cfg.name, str(p["merchant_node"])),
        n_clusters=int(p["k"]), features=(FEATURES, tuple(p["merchant_columns"])),
        max_iter=MAX_ITER,
        context={"snapshot": snapshot.isoformat(), "window_days": str(window_days),
                 "manager": cfg.manager_url, "centre": cfg.centre_url,
                 "merchant": str(p["merchant"]), "id": "phone number (E.164)",
                 "phone_region": ctx.settings.default_region,
                 "mall transform": "log1p RFM, 2 decimals"})
    db.execute(update(Job).where(Job.id == job.id, Job.status == REQUESTED).values(
        status=JobStatus.QUEUED.value, stage="queued: joining the session",
        params={**p, "terms": terms.to_json()}))
    audit.record(db, "request_approve", actor=owner, object_type="job", object_id=job.id,
                 ip=ip, detail={"merchant": p["merchant"], "session": terms.session[:8]})
    db.commit()
    return terms


def decline_request(db: Session, owner: User, job: Job, *, ip: str | None = None) -> None:
    if job.status != REQUESTED:
        raise ValidationError(f"this request is {job.status}; only a waiting one can be "
                              "declined")
    db.execute(update(Job).where(Job.id == job.id).values(
        status=DECLINED.value, stage="declined by the owner", finished_at=utcnow()))
    audit.record(db, "request_decline", actor=owner, object_type="job", object_id=job.id,
                 ip=ip)
    db.commit()


def terms_for(job: Job) -> dict[str, Any] | None:
    """The terms the merchant runs ``cipherseg vertical join`` with (None before approval)."""
    terms = job.params.get("terms")
    return dict(terms) if isinstance(terms, dict) else None


def merchant_jobs(db: Session, merchant: User) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.kind == KIND,
                                             Job.created_by == merchant.id)
                           .order_by(Job.id.desc()).limit(100)))


def owner_jobs(db: Session, owner: User) -> list[Job]:
    return list(db.scalars(select(Job).where(Job.kind == KIND, Job.owner_id == owner.id)
                           .order_by(Job.id.desc()).limit(100)))


# ------------------------------------------------------------------------------ runner
def _phones(ctx: PlatformContext, db: Session, owner_id: int, pseudonyms: list[str]
            ) -> list[str]:
    """The E.164 numbers of ``pseudonyms`` (decrypted in memory: the PSI hashes them here;
    they are this platform's own data and are never stored or sent in clear)."""
    rows = dict(db.execute(select(Customer.pseudonym, Customer.phone_ct)
                           .where(Customer.owner_id == owner_id)).all())
    return [ctx.vault.decrypt("phone", rows[p], context=p) for p in pseudonyms]


def run_vertical_job(ctx: PlatformContext, job_id: int, sink: ProgressSink) -> None:
    """The worker's runner for ``vertical_node`` jobs."""
    from cipherseg.analytics.rfm import segment_names
    from cipherseg.nodes.client import ServiceClient
    from cipherseg.nodes.vertical_holder import run_holder
    from cipherseg.platform.services.segmentation import profile_dict

    started = time.perf_counter()
    cfg = node_config(ctx.settings)
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        terms = VerticalTerms.from_json(job.params["terms"])
        owner_id = job.owner_id
        snapshot = date.fromisoformat(terms.context["snapshot"])
        window = int(terms.context["window_days"])
    verify = str(cfg.ca_file) if cfg.ca_file else True
    try:
        manager = ServiceClient(cfg.manager_url, token=read_token_file(cfg.manager_token_file),
                                what="manager", verify=verify)
        centre = ServiceClient(cfg.centre_url, token=read_token_file(cfg.centre_token_file),
                               what="centre", verify=verify)
    except ParameterError as exc:
        raise ValidationError(str(exc)) from exc
    try:
        sink.update(0.02, "computing this platform's customers' features", force=True)
        try:
            with ctx.sessions() as s:
                pseudonyms, X = node_features(ctx.vault, s, owner_id, snapshot, window)
                if not pseudonyms:
                    raise ValidationError("no customers with transactions in the agreed "
                                          "window")
                phones = _phones(ctx, s, owner_id, pseudonyms)
        except Exception as exc:  # the merchant's node must not wait for the join deadline
            _withdraw(manager, centre, cast(Any, terms), exc)  # uses session and to_json only
            raise
        sink.update(0.05, f"joined; waiting for node {terms.nodes[1]}", force=True)

        def progress(stage: str, done: int, total: int) -> None:
            sink.update(0.1, f"vertical k-means: {stage}")

        outcome = run_holder(terms, cfg.name, phones, X, manager=manager, centre=centre,
                             contact_timeout=cfg.contact_seconds, progress=progress)
    finally:
        manager.close()
        centre.close()
    k = terms.n_clusters
    labels = outcome.labels
    sizes = np.bincount(labels[labels >= 0], minlength=k)
    columns = [*FEATURES, *terms.features[1]]
    centres = pd.DataFrame(outcome.centroids, columns=columns)
    rfm = np.expm1(centres[list(FEATURES)])  # the mall's columns in business units
    profile = pd.concat([rfm, centres[list(terms.features[1])]], axis=1)
    names = segment_names(rfm)
    sink.update(0.97, "storing the shared customers' segments", force=True)
    with ctx.sessions() as s, sink.pause_if_sqlite():
        s.execute(delete(SegmentMember).where(SegmentMember.job_id == job_id))
        s.execute(delete(Segment).where(Segment.job_id == job_id))
        for i in range(k):
            s.add(Segment(job_id=job_id, position=i, name=names[i], size=int(sizes[i]),
                          centroid=profile_dict(profile.iloc[i])))
        ids = dict(s.execute(select(Customer.pseudonym, Customer.id)
                             .where(Customer.owner_id == owner_id)).all())
        members = [{"job_id": job_id, "customer_id": ids[p], "pseudonym": p,
                    "segment_index": int(lab)}
                   for p, lab in zip(pseudonyms, labels, strict=True) if lab >= 0 and p in ids]
        for start in range(0, len(members), 5000):
            s.execute(insert(SegmentMember), members[start:start + 5000])
        result: dict[str, Any] = {
            "session": terms.session, "nodes": list(terms.nodes), "columns": columns,
            "n_customers": len(pseudonyms), "n_shared": len(members),
            "n_iter": outcome.n_iter, "centroids": np.round(outcome.centroids, 6).tolist(),
            "bytes_sent": outcome.bytes_sent, "bytes_received": outcome.bytes_received,
            "seconds": round(time.perf_counter() - started, 3),
            "sizes": "shared customers per segment"}
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.DONE.value, progress=1.0, stage="done", result=result,
            finished_at=utcnow(), heartbeat_at=utcnow()))
        owner = s.get(User, owner_id)
        audit.record(s, "joint_finish", actor=owner, object_type="job", object_id=job_id,
                     detail={"shared": len(members), "k": k, "n_iter": outcome.n_iter})
        s.commit()
