"""Segmentation jobs: RFM from the owner's transactions, encrypted k-means, stored results.

The worker runs the **data owner's** side here: it computes RFM features from the owner's
transactions (customers appear only by pseudonym), scales them (log1p + standardise, the
owner's :class:`~cipherseg.analytics.rfm.RFMScaler`), quantises them to the fixed-point grid,
generates the CKKS keys and drives protocol 4.1. The **compute centre** runs in its own
process (:mod:`cipherseg.hosting.centre_process`, under the ``centre`` service account), or
at a remote service (``CIPHERSEG_CENTRE_URL``, ``cipherseg centre serve``), and receives only
the public context and ciphertexts. With ``CIPHERSEG_CENTRE_PROCESS=false`` the centre runs in
the worker process instead (one trust domain: tests and small set-ups).

Stored per job: segment sizes, each segment's mean recency/frequency/monetary in business
units (days, purchases, money) and its name; one label per pseudonymised customer
(:class:`~cipherseg.platform.models.SegmentMember`); the run's public schedule (customers,
iterations, bytes) and timings.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.platform import audit
from cipherseg.platform.core.config import WEB_SCHEMES
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.jobs import ProgressSink, enqueue, finish
from cipherseg.platform.models import (
    Customer,
    Job,
    Role,
    Segment,
    SegmentMember,
    Transaction,
    User,
)
from cipherseg.platform.security import hash_password
from cipherseg.transport.base import Transport

FEATURES = {"recency": "Recency (days since last purchase)",
            "frequency": "Frequency (purchases)",
            "monetary": "Monetary (average spend per purchase)"}
DECIMALS = 2
MAX_ITER = 100
TOL = 1e-4
#: Progress fractions of the job's stages.
_STAGES = {"features": (0.0, 0.1), "encrypt": (0.1, 0.2), "init": (0.2, 0.45),
           "iterate": (0.45, 0.95)}


def start_segmentation(ctx: PlatformContext, session: Session, owner: User, *, k: int,
                       features: list[str], scheme: str, ip: str | None = None,
                       request_id: int | None = None, commit: bool = True) -> Job:
    """Validate the request and queue the job (commits unless ``commit=False``).

    ``request_id``: the merchant's segmentation request this run answers.
    """
    feats = [f for f in FEATURES if f in set(features)]
    if not feats or len(feats) != len(set(features)):
        raise ValidationError("choose at least one feature among recency, frequency and "
                              "monetary")
    if scheme not in WEB_SCHEMES:
        raise ValidationError(f"scheme {scheme!r} is not offered; choose "
                              f"{', '.join(WEB_SCHEMES)}")
    if not 2 <= k <= ctx.settings.max_k:
        raise ValidationError(f"k must be between 2 and {ctx.settings.max_k}")
    n_customers = session.scalar(
        select(Customer.id).where(Customer.owner_id == owner.id).limit(1))
    if n_customers is None:
        raise ValidationError("upload customers and their transactions first")
    params: dict[str, Any] = {"k": k, "features": feats, "scheme": scheme}
    if request_id is not None:
        params["request_id"] = request_id
    job = enqueue(session, "segmentation", owner=owner, params=params)
    audit.record(session, "job_start", actor=owner, object_type="job", object_id=job.id, ip=ip,
                 detail={"number": job.number, **params})
    if commit:
        session.commit()
    return job


def centre_account(session: Session, name: str) -> User:
    """The compute centre's service account; created (no usable password) if missing.

    A disabled account, or one with another role, stops segmentations: the administrator
    controls the centre through it.
    """
    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        user = User(username=name, role=Role.CENTRE.value, active=True,
                    password_hash=hash_password(secrets.token_urlsafe(32)))
        session.add(user)
        session.commit()
    if user.role != Role.CENTRE.value or not user.active:
        raise ValidationError(f"the compute centre's service account {name!r} is disabled or "
                              "not in the centre role; an administrator must enable it")
    return user


def load_transactions(session: Session, owner_id: int) -> pd.DataFrame:
    """The owner's transactions keyed by customer pseudonym (customer, invoice, date, amount)."""
    stmt = (select(Customer.pseudonym, Transaction.external_id, Transaction.date,
                   Transaction.amount)
            .join(Customer, Customer.id == Transaction.customer_id)
            .where(Transaction.owner_id == owner_id)
            .execution_options(yield_per=20_000))
    rows = session.execute(stmt).all()
    df = pd.DataFrame(rows, columns=["customer", "invoice", "date", "amount"])
    df["date"] = pd.to_datetime(df["date"])
    df["amount"] = df["amount"].astype(np.float64)
    return df


def rfm_features(tx: pd.DataFrame) -> pd.DataFrame:
    """Recency (days), frequency (purchases), monetary (mean spend per purchase) per pseudonym.

    Recency counts from the day after the latest transaction in the data.
    """
    from cipherseg.analytics.rfm import RFMColumns, compute_rfm

    columns = RFMColumns(customer="customer", invoice="invoice", date="date", amount="amount")
    rfm = compute_rfm(tx, columns)  # snapshot: the day after the latest transaction
    feats: pd.DataFrame = rfm.features.loc[:, list(FEATURES)]
    return feats


def _progress_adapter(sink: ProgressSink) -> Any:
    def progress(stage: str, done: int, total: int) -> None:
        lo, hi = _STAGES.get(stage, (0.2, 0.95))
        frac = lo + (hi - lo) * (done / total if total else 1.0)
        label = {"encrypt": "encrypting features", "init": "k-means++ (secure selection)",
                 "iterate": "encrypted Lloyd iterations"}.get(stage, stage)
        sink.update(frac, f"{label} {done}/{total}")
    return progress


def run_encrypted_kmeans(ctx: PlatformContext, X: np.ndarray, k: int, progress: Any,
                         seed: int | None = None) -> dict[str, Any]:
    """Protocol 4.1 as :meth:`cipherseg.EncryptedKMeans.fit` runs it, with the worker as the
    data owner and the centre where the settings put it (:func:`centre_transport`)."""
    from cipherseg.analytics.estimators import EncryptedKMeans
    from cipherseg.engine.local import LocalExecutor

    model = EncryptedKMeans(n_clusters=k, max_iter=MAX_ITER, tol=TOL, random_state=seed,
                            n_jobs=ctx.settings.n_jobs)
    executor = LocalExecutor(ctx.settings.n_jobs)  # the owner's (and an in-process centre's)
    try:
        with centre_transport(ctx) as (centre, where):
            model.fit(X, progress=progress, executor=executor, centre=centre)
    finally:
        executor.close()
    report = model.report_
    return {"labels": np.asarray(model.labels_), "centers": model.cluster_centers_,
            "init_centers": model.init_centers_, "inertia": float(model.inertia_),
            "n_iter": int(model.n_iter_), "bytes_to_centre": int(report["bytes_to_centre"]),
            "bytes_to_owner": int(report["bytes_to_owner"]), "n_blocks": int(report["n_blocks"]),
            "where": where}


@contextmanager
def centre_transport(ctx: PlatformContext) -> Iterator[tuple[Transport | None, str]]:
    """The transport to the compute centre and a description of where it runs: a remote
    service (``CIPHERSEG_CENTRE_URL``), a child process (``CIPHERSEG_CENTRE_PROCESS``, the
    default), or ``None`` for a centre inside this process."""
    settings = ctx.settings
    if settings.centre_url:
        from cipherseg.transport.http import HttpTransport

        token = None
        if settings.centre_token_file is not None:
            from cipherseg.transport.tokens import read_token_file

            token = read_token_file(settings.centre_token_file)
        verify: bool | str = str(settings.centre_ca_file) if settings.centre_ca_file else True
        with HttpTransport(settings.centre_url, token=token, verify=verify) as remote:
            yield remote, f"compute centre service at {settings.centre_url}"
    elif settings.centre_process:
        from cipherseg.hosting.centre_process import OWNER, CentreProcess

        with CentreProcess(n_jobs=settings.n_jobs, os_user=settings.centre_os_user) as proc:
            yield (proc.link(OWNER),
                   f"separate process (pid {proc.status.get('pid')})")
    else:
        yield None, "in the worker process"


def make_segmentation_runner(ctx: PlatformContext) -> Any:
    """The worker's runner for ``segmentation`` jobs."""

    def run_segmentation(job_id: int, sink: ProgressSink) -> None:
        from cipherseg.analytics.rfm import RFMScaler, segment_names
        from cipherseg.encoding import FixedPointEncoder

        factory = ctx.sessions
        started = time.perf_counter()
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            owner = s.get(User, job.owner_id)
            params = dict(job.params)
            centre = centre_account(s, ctx.settings.centre_account)
            centre_name = centre.username
        k, feats = int(params["k"]), list(params["features"])
        sink.update(0.02, "computing RFM features", force=True)
        with factory() as s:
            tx = load_transactions(s, job.owner_id)
        if tx.empty:
            raise ValidationError("there are no transactions to segment; upload them first")
        raw = rfm_features(tx)
        if len(raw) < k:
            raise ValidationError(f"{len(raw)} customers with transactions cannot form {k} "
                                  "segments; lower k")
        scaler = RFMScaler(log=True).fit(raw)
        Z = pd.DataFrame(np.asarray(scaler.transform(raw)), index=raw.index,
                         columns=list(FEATURES))
        X = FixedPointEncoder(DECIMALS).quantise(Z.loc[:, feats].to_numpy(np.float64))
        sink.update(0.1, f"encrypting {len(raw)} customers (compute centre: {centre_name})",
                    force=True)
        t = time.perf_counter()
        run = run_encrypted_kmeans(ctx, X, k, _progress_adapter(sink))
        seconds_he = time.perf_counter() - t
        labels = run["labels"]
        sizes = np.bincount(labels, minlength=k)
        profile = raw.groupby(labels).mean().reindex(range(k))
        names = _unique(segment_names(profile.loc[:, list(FEATURES)]))
        sink.update(0.96, "storing results", force=True)
        with factory() as s, sink.pause_if_sqlite():
            ids = dict(s.execute(select(Customer.pseudonym, Customer.id)
                                 .where(Customer.owner_id == job.owner_id)).all())
            s.execute(delete(SegmentMember).where(SegmentMember.job_id == job_id))
            s.execute(delete(Segment).where(Segment.job_id == job_id))
            for i in range(k):
                row = profile.iloc[i]
                s.add(Segment(job_id=job_id, position=i, name=names[i], size=int(sizes[i]),
                              centroid={"recency_days": _num(row["recency"]),
                                        "frequency": _num(row["frequency"]),
                                        "monetary": _num(row["monetary"])}))
            members = [{"job_id": job_id, "customer_id": ids[p], "pseudonym": p,
                        "segment_index": int(lab)}
                       for p, lab in zip(raw.index, labels, strict=True) if p in ids]
            for start in range(0, len(members), 5000):
                s.execute(insert(SegmentMember), members[start:start + 5000])
            result = {
                "n_customers": len(raw), "n_transactions": len(tx),
                "n_iter": run["n_iter"], "inertia_standardised": run["inertia"],
                "bytes_to_centre": run["bytes_to_centre"],
                "bytes_to_owner": run["bytes_to_owner"], "n_blocks": run["n_blocks"],
                "centre": f"{centre_name}, {run['where']}",
                "seconds": time.perf_counter() - started, "seconds_encrypted": seconds_he,
                "features": feats, "decimals": DECIMALS,
                "centroids_standardised": np.round(run["centers"], 6).tolist(),
            }
            s.execute(update(Job).where(Job.id == job_id).values(
                status="done", progress=1.0, stage="done", result=result,
                finished_at=utcnow(), heartbeat_at=utcnow()))
            audit.record(s, "job_finish", actor=owner, object_type="job", object_id=job_id,
                         detail={"customers": len(raw), "k": k,
                                 "n_iter": run["n_iter"], "centre": centre_name})
            s.commit()

    return audited_runner(ctx, run_segmentation)


def audited_runner(ctx: PlatformContext, run: Any) -> Any:
    """Wrap a job runner: audit every failure; a ValidationError fails the job with its
    message (the user's data was at fault), anything else propagates to the worker."""

    def guarded(job_id: int, sink: ProgressSink) -> None:
        try:
            run(job_id, sink)
        except Exception as exc:
            with ctx.sessions() as s:
                job = s.get(Job, job_id)
                owner = s.get(User, job.owner_id) if job else None
                audit.record(s, "job_failed", actor=owner, object_type="job",
                             object_id=job_id, detail={"error": type(exc).__name__})
                s.commit()
            if isinstance(exc, ValidationError):
                finish(ctx.sessions, job_id, status="failed", error=str(exc))
                return
            raise

    return guarded


def _num(value: Any) -> float | None:
    v = float(value)
    return None if np.isnan(v) else round(v, 4)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} {seen[n]}")
    return out
