"""Joint segmentation jobs (the service and the runner): several owner accounts pool their
customers with protocol 4.2. Pages: :mod:`cipherseg.platform.joint.routes`.

Flow: an owner creates a job of kind ``joint`` naming the other participating owner accounts
and k; the job waits (status ``awaiting``, which the worker never claims) until **every** named
owner has accepted it on their own page; the last acceptance queues it. The worker then runs
:func:`cipherseg.hosting.joint_processes.run_joint_kmeans_processes`: the manager, the compute
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
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from fastapi import HTTPException
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cipherseg.analytics.window import ResolvedWindow, TimeWindow
from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.pii.keys import PiiKeyring
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import audit
from cipherseg.platform.deps import (
    PlatformContext,
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
    from cipherseg.platform.services.segmentation import load_transactions, window_features

    tx = load_transactions(vault, session, owner_id)
    if tx.empty or window.select(tx, "date").empty:
        return [], np.zeros((0, len(JOINT_FEATURES)))
    feats = window_features(tx, window).loc[:, list(JOINT_FEATURES)].sort_index()
    X = FixedPointEncoder(DECIMALS).quantise(np.log1p(feats.to_numpy(np.float64)))
    return [str(p) for p in feats.index], np.asarray(X, dtype=np.float64)


def owners_latest_day(vault: PiiVault, session: Session, owner_ids: list[int]) -> date:
    """The latest purchase day of all participants (each contributes its own latest day)."""
    from cipherseg.platform.services.segmentation import latest_day, load_transactions

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
    from cipherseg.hosting.joint_processes import run_joint_kmeans_processes
    from cipherseg.platform.services.segmentation import _num, centre_account
    from cipherseg.protocols.joint.runner import run_joint_kmeans

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
