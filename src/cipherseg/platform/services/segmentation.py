"""Segmentation jobs: RFM from the owner's transactions, encrypted k-means, stored results.

The worker runs the **data owner's** side here: it selects the owner's transactions in the
job's time window (:class:`~cipherseg.analytics.window.TimeWindow`; recency is counted from
the window's end, never from the day the job runs), computes RFM features and, if asked,
the share of spend in the owner's top-N categories (:mod:`cipherseg.analytics.behaviour`),
and hands them to the analytics pipeline
(:func:`cipherseg.analytics.segmentation.segment_customers`: log1p + standardise, quantise,
CKKS keys, protocol 4.1). With ``k`` left open ("choose for me") the pipeline runs for every
k from 2 to 8 (:func:`~cipherseg.analytics.segmentation.choose_k`); the owner computes
inertia and silhouette on its own features, and the recommended k's segments are stored,
with every k's measures kept in the job's result.

The **compute centre** runs in its own process (:mod:`cipherseg.hosting.centre_process`,
under the ``centre`` service account), or at a remote service (``CIPHERSEG_CENTRE_URL``,
``cipherseg centre serve``), and receives only the public context and ciphertexts. With
``CIPHERSEG_CENTRE_PROCESS=false`` the centre runs in the worker process instead (one trust
domain: tests and small set-ups).

Stored per job: segment sizes, each segment's typical customer in business units (days,
purchases, money, category shares: ``expm1`` of the segment's mean ``log1p`` value, the same
definition a joint segmentation's released centroid has) and its name; one label per
pseudonymised customer (:class:`~cipherseg.platform.models.SegmentMember`); the run's public
schedule (customers, iterations, bytes) and timings.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cipherseg.analytics.behaviour import MAX_TOP_N
from cipherseg.analytics.segmentation import KChoice, SegmentationResult
from cipherseg.analytics.window import ResolvedWindow, TimeWindow
from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import audit
from cipherseg.platform.core.config import WEB_SCHEMES
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.jobs import ProgressSink, enqueue, finish
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
from cipherseg.platform.security import hash_password
from cipherseg.transport.base import Transport

FEATURES = {"recency": "Recency (days since the last purchase in the window)",
            "frequency": "Frequency (purchases)",
            "monetary": "Monetary (average spend per purchase)",
            "categories": "Share of spend in the top categories"}
RFM = ("recency", "frequency", "monetary")
#: The k tried when the number of segments is left to the run.
CHOOSE_KS = range(2, 9)
DEFAULT_TOP_CATEGORIES = 3
DECIMALS = 2
MAX_ITER = 100
TOL = 1e-4
#: Progress fractions of the job's stages.
_STAGES = {"features": (0.0, 0.1), "encrypt": (0.1, 0.2), "init": (0.2, 0.45),
           "iterate": (0.45, 0.95)}


def start_segmentation(ctx: PlatformContext, session: Session, owner: User, *, k: int | None,
                       features: list[str], scheme: str, ip: str | None = None,
                       request_id: int | None = None, window: TimeWindow | None = None,
                       top_categories: int = DEFAULT_TOP_CATEGORIES,
                       commit: bool = True) -> Job:
    """Validate the request and queue the job (commits unless ``commit=False``).

    ``k=None``: choose k (2 to 8) by running each through the encrypted protocol.
    ``request_id``: the merchant's segmentation request this run answers.
    """
    feats = [f for f in FEATURES if f in set(features)]
    if not feats or len(feats) != len(set(features)):
        raise ValidationError("choose at least one feature among "
                              f"{', '.join(FEATURES)}")
    if not set(feats) & set(RFM):
        raise ValidationError("choose at least one of recency, frequency and monetary")
    if scheme not in WEB_SCHEMES:
        raise ValidationError(f"scheme {scheme!r} is not offered; choose "
                              f"{', '.join(WEB_SCHEMES)}")
    if k is not None and not 2 <= k <= ctx.settings.max_k:
        raise ValidationError(f"k must be between 2 and {ctx.settings.max_k}")
    if "categories" in feats and not 1 <= top_categories <= MAX_TOP_N:
        raise ValidationError(f"the number of top categories must be between 1 and "
                              f"{MAX_TOP_N}")
    n_customers = session.scalar(
        select(Customer.id).where(Customer.owner_id == owner.id).limit(1))
    if n_customers is None:
        raise ValidationError("upload customers and their transactions first")
    window = window or TimeWindow()
    params: dict[str, Any] = {"k": k, "features": feats, "scheme": scheme,
                              "window": window.to_dict()}
    if "categories" in feats:
        params["top_categories"] = top_categories
    if request_id is not None:
        params["request_id"] = request_id
    job = enqueue(session, JobKind.SEGMENTATION, owner=owner, params=params)
    audit.record(session, "job_start", actor=owner, object_type="job", object_id=job.id, ip=ip,
                 detail={"number": job.number, **{**params, "k": k or "choose",
                                                   "window": window.label()}})
    if commit:
        session.commit()
    return job


def choose_ks(max_k: int) -> list[int]:
    """The k a "choose k" run tries (2 to 8, at most the platform's maximum)."""
    return [k for k in CHOOSE_KS if k <= max_k]


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


def load_transactions(vault: PiiVault, session: Session, owner_id: int) -> pd.DataFrame:
    """The owner's transactions keyed by customer pseudonym (customer, invoice, date, amount,
    category), decrypted (:mod:`cipherseg.platform.purchases`)."""
    from cipherseg.platform.purchases import owner_transactions

    return owner_transactions(vault, session, owner_id)


def latest_day(tx: pd.DataFrame) -> date:
    """The day of the latest purchase in ``tx`` (which must not be empty)."""
    day: date = pd.Timestamp(tx["date"].max()).date()
    return day


def window_features(tx: pd.DataFrame, window: ResolvedWindow, *,
                    top_categories: int | None = None) -> pd.DataFrame:
    """RFM (recency from the window's end) of the purchases in ``window`` and, with
    ``top_categories``, the share of spend in the top categories; one row per pseudonym."""
    from cipherseg.analytics.behaviour import category_shares
    from cipherseg.analytics.rfm import RFMColumns, compute_rfm

    part = window.select(tx, "date")
    if part.empty:
        raise ValidationError(f"there are no purchases in the window ({window.label()}); "
                              "choose a wider window")
    columns = RFMColumns(customer="customer", invoice="invoice", date="date", amount="amount")
    feats: pd.DataFrame = compute_rfm(part, columns, snapshot=window.snapshot).features
    feats = feats.loc[:, list(RFM)]
    if top_categories:
        shares = category_shares(part, top_n=top_categories)
        feats = feats.join(shares.reindex(feats.index, fill_value=0.0))
    feats.index.name = "customer"
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


def _k_progress(sink: ProgressSink, ks: list[int], k: int) -> Any:
    """Progress of one k of a "choose k" run, within the job's encryption-to-iterations band."""
    i, lo, hi = ks.index(k), 0.1, 0.95
    band_lo = lo + (hi - lo) * i / len(ks)
    band_hi = lo + (hi - lo) * (i + 1) / len(ks)

    def progress(stage: str, done: int, total: int) -> None:
        frac = band_lo + (band_hi - band_lo) * (done / total if total else 1.0) * (
            1.0 if stage == "iterate" else 0.5)
        sink.update(frac, f"choosing k: k={k} ({i + 1} of {len(ks)}), {stage} {done}/{total}")
    return progress


def segment_in_window(ctx: PlatformContext, table: pd.DataFrame, columns: list[str],
                      k: int | None, sink: ProgressSink, *, seed: int | None = None
                      ) -> tuple[SegmentationResult, KChoice | None, str]:
    """The analytics pipeline on the owner's feature table, with the centre where the
    settings put it: one k, or (``k=None``) every k of :func:`choose_ks` and the recommended
    k's result. Returns the result, the choice (or ``None``) and where the centre ran."""
    from cipherseg.analytics.segmentation import choose_k, segment_customers
    from cipherseg.engine.local import LocalExecutor

    common: dict[str, Any] = {"random_state": seed, "decimals": DECIMALS,
                              "max_iter": MAX_ITER, "tol": TOL, "n_jobs": ctx.settings.n_jobs,
                              "columns": columns}
    executor = LocalExecutor(ctx.settings.n_jobs)  # the owner's (and an in-process centre's)
    try:
        with centre_transport(ctx) as (centre, where):
            if k is not None:
                result = segment_customers(table, n_clusters=k, executor=executor,
                                           centre=centre, progress=_progress_adapter(sink),
                                           **common)
                return result, None, where
            ks = choose_ks(ctx.settings.max_k)
            choice = choose_k(table, ks=ks, executor=executor, centre=centre,
                              progress_for=functools.partial(_k_progress, sink, ks), **common)
            return choice.results[choice.recommended], choice, where
    finally:
        executor.close()


def make_segmentation_runner(ctx: PlatformContext) -> Any:
    """The worker's runner for ``segmentation`` jobs."""

    def run_segmentation(job_id: int, sink: ProgressSink) -> None:
        factory = ctx.sessions
        started = time.perf_counter()
        with factory() as s:
            job = s.get(Job, job_id)
            assert job is not None
            owner = s.get(User, job.owner_id)
            params = dict(job.params)
            centre = centre_account(s, ctx.settings.centre_account)
            centre_name = centre.username
        k = None if params.get("k") is None else int(params["k"])
        feats = list(params["features"])
        top = int(params.get("top_categories") or 0) if "categories" in feats else 0
        sink.update(0.02, "computing features", force=True)
        with factory() as s:
            tx = load_transactions(ctx.vault, s, job.owner_id)
        if tx.empty:
            raise ValidationError("there are no transactions to segment; upload them first")
        window = TimeWindow.from_dict(params.get("window")).resolve(latest_day(tx))
        table = window_features(tx, window, top_categories=top or None)
        if len(table) < (k or 2):
            raise ValidationError(f"{len(table)} customers with purchases in the window cannot "
                                  f"form {k or 2} segments; lower k or widen the window")
        columns = [f for f in RFM if f in feats] + [c for c in table.columns if c not in RFM]
        sink.update(0.1, f"encrypting {len(table)} customers (compute centre: {centre_name})",
                    force=True)
        t = time.perf_counter()
        result, choice, where = segment_in_window(ctx, table, columns, k, sink)
        seconds_he = time.perf_counter() - t
        k = result.model.n_clusters
        labels = np.asarray(result.model.labels_)
        sizes = np.bincount(labels, minlength=k)
        names = list(result.segments["name"])
        sink.update(0.96, "storing results", force=True)
        with factory() as s, sink.pause_if_sqlite():
            ids = dict(s.execute(select(Customer.pseudonym, Customer.id)
                                 .where(Customer.owner_id == job.owner_id)).all())
            s.execute(delete(SegmentMember).where(SegmentMember.job_id == job_id))
            s.execute(delete(Segment).where(Segment.job_id == job_id))
            for i in range(k):
                s.add(Segment(job_id=job_id, position=i, name=names[i][:64],
                              size=int(sizes[i]), centroid=profile_dict(result.typical.iloc[i])))
            members = [{"job_id": job_id, "customer_id": ids[p], "pseudonym": p,
                        "segment_index": int(lab)}
                       for p, lab in zip(table.index, labels, strict=True) if p in ids]
            for start in range(0, len(members), 5000):
                s.execute(insert(SegmentMember), members[start:start + 5000])
            report = result.model.report_
            outcome = {
                "k": k, "n_customers": len(table), "n_transactions": len(tx),
                "window": {**window.to_dict(), "label": window.label()},
                "n_iter": int(result.model.n_iter_),
                "inertia_standardised": float(result.model.inertia_),
                "ari_vs_plaintext": round(result.ari_vs_sklearn, 6),
                "bytes_to_centre": int(report["bytes_to_centre"]),
                "bytes_to_owner": int(report["bytes_to_owner"]),
                "n_blocks": int(report["n_blocks"]),
                "centre": f"{centre_name}, {where}",
                "seconds": time.perf_counter() - started, "seconds_encrypted": seconds_he,
                "features": feats, "columns": columns, "decimals": DECIMALS,
                "centroids_standardised": np.round(result.model.cluster_centers_, 6).tolist(),
            }
            if choice is not None:
                outcome["choose_k"] = choice.to_dict()
            s.execute(update(Job).where(Job.id == job_id).values(
                status=JobStatus.DONE.value, progress=1.0, stage="done", result=outcome,
                finished_at=utcnow(), heartbeat_at=utcnow()))
            audit.record(s, "job_finish", actor=owner, object_type="job", object_id=job_id,
                         detail={"customers": len(table), "k": k,
                                 "n_iter": outcome["n_iter"], "centre": centre_name,
                                 "chosen": choice is not None})
            s.commit()

    return audited_runner(ctx, run_segmentation)


def profile_dict(row: pd.Series) -> dict[str, float | None]:
    """A segment's stored profile: recency in days, frequency, monetary, category shares."""
    out: dict[str, float | None] = {
        "recency_days": _num(row["recency"]), "frequency": _num(row["frequency"]),
        "monetary": _num(row["monetary"])}
    for col, value in row.items():
        if str(col) not in RFM:
            out[str(col)] = _num(value)
    return out


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
                finish(ctx.sessions, job_id, status=JobStatus.FAILED, error=str(exc))
                return
            raise

    return guarded


def _num(value: Any) -> float | None:
    v = float(value)
    return None if np.isnan(v) else round(v, 4)


