"""Cross-node joint jobs: this platform as one node of a joint segmentation across
organisations (protocol 4.2 against the manager and centre services; docs/deployment.md).

Flow: an owner on node A creates an **invitation** (k, the nodes, the feature schedule, the
time window, the services' URLs; signed with the node's key) and sends it out of band; on
node B an owner pastes it, reviews the terms and the inviter's key fingerprint, and accepts.
Each side's acceptance queues a ``joint_node`` job on its own node; the job computes this
node's customers' features from **this node's database only**, joins the session at the
manager with the same terms and runs this node's owner party
(:func:`cipherseg.nodes.owner.run_owner`). It stores the released model and labels of this
node's customers only; segment sizes are this node's customers per segment (the pooled
sizes stay with the manager). Releases to merchants are this node's own grants.

A node that leaves or dies ends the session on the services; every other node's job fails
with the reason and stores nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ParameterError, ValidationError
from cipherseg.nodes.invitation import (
    Invitation,
    fingerprint,
    load_or_create_signing_key,
    read_invitation,
    sign_invitation,
)
from cipherseg.nodes.terms import MAX_NODES, JointTerms
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import audit
from cipherseg.platform.core.config import Settings
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.jobs import ProgressSink, enqueue
from cipherseg.platform.models import (
    JOB_PENDING,
    Customer,
    Job,
    JobKind,
    JobStatus,
    Segment,
    SegmentMember,
    User,
)
from cipherseg.transport.tokens import OWNER_NAME, read_token_file

KIND = JobKind.JOINT_NODE
FEATURES = ("recency", "frequency", "monetary")
DECIMALS = 2
MAX_ITER = 100
MAX_WINDOW_DAYS = 3650


@dataclass(frozen=True)
class NodeConfig:
    name: str
    manager_url: str
    centre_url: str
    manager_token_file: Path
    centre_token_file: Path
    ca_file: Path | None
    contact_seconds: float
    key_file: Path


def node_config(settings: Settings) -> NodeConfig:
    """This platform's node settings, or a clear error naming what is missing."""
    missing = [f"CIPHERSEG_{n.upper()}" for n in (
        "node_name", "node_manager_url", "node_manager_token_file", "node_centre_url",
        "node_centre_token_file") if getattr(settings, n) is None]
    if missing:
        raise ValidationError("this platform is not set up as a node of cross-organisation "
                              f"joint segmentations: set {', '.join(missing)} "
                              "(docs/deployment.md)")
    assert settings.node_name and settings.node_manager_url and settings.node_centre_url
    assert settings.node_manager_token_file and settings.node_centre_token_file
    if not OWNER_NAME.fullmatch(settings.node_name):
        raise ValidationError("CIPHERSEG_NODE_NAME: 1-64 letters, digits, '.', '_' or '-'")
    return NodeConfig(settings.node_name, settings.node_manager_url.rstrip("/"),
                      settings.node_centre_url.rstrip("/"), settings.node_manager_token_file,
                      settings.node_centre_token_file, settings.node_ca_file,
                      settings.node_contact_seconds, settings.keys_dir / "node-invitation.key")


def key_fingerprint(cfg: NodeConfig) -> str:
    return fingerprint(load_or_create_signing_key(cfg.key_file).public_key())


# ------------------------------------------------------------------------------ features
def node_features(vault: PiiVault, session: Session, owner_id: int, snapshot: date,
                  window_days: int) -> tuple[list[str], npt.NDArray[np.float64]]:
    """This node's customers (pseudonyms, sorted) and their quantised ``log1p`` RFM features
    over the agreed window: transactions in [snapshot - window_days, snapshot)."""
    from cipherseg.analytics.rfm import RFMColumns, compute_rfm
    from cipherseg.encoding import FixedPointEncoder
    from cipherseg.platform.services.segmentation import load_transactions

    tx = load_transactions(vault, session, owner_id)
    start = pd.Timestamp(snapshot - timedelta(days=window_days))
    tx = tx[(tx["date"] >= start) & (tx["date"] < pd.Timestamp(snapshot))]
    if tx.empty:
        return [], np.zeros((0, len(FEATURES)))
    columns = RFMColumns(customer="customer", invoice="invoice", date="date", amount="amount")
    feats = compute_rfm(tx, columns, snapshot=pd.Timestamp(snapshot)).features
    feats = feats.loc[:, list(FEATURES)].sort_index()
    X = FixedPointEncoder(DECIMALS).quantise(np.log1p(feats.to_numpy(np.float64)))
    return [str(p) for p in feats.index], np.asarray(X, dtype=np.float64)


# ------------------------------------------------------------------------------ services
def _has_customers(db: Session, owner: User) -> bool:
    return db.scalar(select(Customer.id).where(Customer.owner_id == owner.id).limit(1)) \
        is not None


def _latest_purchase(vault: PiiVault, db: Session, owner: User) -> date | None:
    """This node's latest purchase day (purchases are encrypted at rest: decrypted here)."""
    from cipherseg.platform.services.segmentation import latest_day, load_transactions

    tx = load_transactions(vault, db, owner.id)
    return None if tx.empty else latest_day(tx)


def create_invitation(ctx: PlatformContext, db: Session, owner: User, *, others: list[str],
                      k: int, window_days: int = 365, window_end: date | None = None,
                      ip: str | None = None) -> tuple[Job, str]:
    """A signed invitation naming this node and ``others``, and this node's queued job
    (commits). The job joins the session at once and waits for the others there.

    The time window is ``window_days`` days before ``window_end`` (exclusive; default: the
    day after this node's latest purchase, which the invitation therefore discloses); recency
    counts from ``window_end`` on every node, never from the day the job runs."""
    cfg = node_config(ctx.settings)
    nodes = [cfg.name, *dict.fromkeys(o.strip() for o in others if o.strip())]
    if len(nodes) < 2 or cfg.name in nodes[1:]:
        raise ValidationError("name at least one other node (not this one)")
    if len(nodes) > MAX_NODES:
        raise ValidationError(f"at most {MAX_NODES} nodes can take part in one joint job")
    if not 2 <= k <= ctx.settings.max_k:
        raise ValidationError(f"k must be between 2 and {ctx.settings.max_k}")
    if not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise ValidationError(f"the time window is 1 to {MAX_WINDOW_DAYS} days")
    if not _has_customers(db, owner):
        raise ValidationError("upload customers and their transactions first")
    if window_end is None:
        latest = _latest_purchase(ctx.vault, db, owner)
        if latest is None:
            raise ValidationError("upload transactions first (the window ends after the "
                                  "latest purchase by default)")
        window_end = latest + timedelta(days=1)
    if window_end > utcnow().date() + timedelta(days=1):
        raise ValidationError("the time window cannot end in the future")
    snapshot = window_end
    terms = JointTerms(
        session=uuid.uuid4().hex, nodes=tuple(nodes), n_clusters=k, features=FEATURES,
        decimals=DECIMALS, max_iter=MAX_ITER,
        context={"snapshot": snapshot.isoformat(), "window_days": str(window_days),
                 "manager": cfg.manager_url, "centre": cfg.centre_url,
                 "transform": "log1p, 2 decimals"})
    key = load_or_create_signing_key(cfg.key_file)
    token = sign_invitation(terms, cfg.name, key,
                            valid_seconds=60 * ctx.settings.node_invitation_minutes)
    job = _queue(db, owner, terms, role="inviter", inviter=cfg.name, ip=ip)
    return job, token


def review_invitation(ctx: PlatformContext, token: str) -> tuple[Invitation, list[str]]:
    """The invitation and what would stop this node from accepting it (empty: acceptable)."""
    cfg = node_config(ctx.settings)
    inv = read_invitation(token)
    t = inv.terms
    problems = []
    if inv.expired:
        problems.append(f"the invitation expired at {inv.expires:%Y-%m-%d %H:%M} UTC; ask "
                        "for a new one")
    if cfg.name not in t.nodes or cfg.name == inv.inviter:
        problems.append(f"the invitation does not invite this node ({cfg.name})")
    for what, url in (("manager", cfg.manager_url), ("centre", cfg.centre_url)):
        if t.context.get(what, "").rstrip("/") != url:
            problems.append(f"it names the {what} {t.context.get(what)!r}; this node uses "
                            f"{url} (its token is only ever sent there)")
    if t.features != FEATURES or t.decimals != DECIMALS or t.init != "k-means++":
        problems.append("its feature schedule is not this platform's (log1p RFM, 2 decimals, "
                        "k-means++)")
    if not 2 <= t.n_clusters <= ctx.settings.max_k:
        problems.append(f"k = {t.n_clusters} is outside this platform's 2-{ctx.settings.max_k}")
    try:
        date.fromisoformat(t.context.get("snapshot", ""))
        if not 1 <= int(t.context.get("window_days", "")) <= MAX_WINDOW_DAYS:
            raise ValueError
    except ValueError:
        problems.append("its time window is not a snapshot date and a number of days")
    return inv, problems


def accept_invitation(ctx: PlatformContext, db: Session, owner: User, token: str, *,
                      ip: str | None = None) -> Job:
    """Accept on this node: queue this node's job for the invitation's session (commits)."""
    inv, problems = review_invitation(ctx, token)
    if problems:
        raise ValidationError("; ".join(problems))
    if not _has_customers(db, owner):
        raise ValidationError("upload customers and their transactions first")
    for job in db.scalars(select(Job).where(Job.kind == KIND).order_by(Job.id.desc())
                          .limit(1000)):
        if job.params.get("terms", {}).get("session") == inv.terms.session:
            raise ValidationError(f"this invitation was already accepted (joint job "
                                  f"#{job.number} on this node)")
    return _queue(db, owner, inv.terms, role="invited", inviter=inv.inviter, ip=ip,
                  fingerprint_=inv.fingerprint)


def _queue(db: Session, owner: User, terms: JointTerms, *, role: str, inviter: str,
           ip: str | None, fingerprint_: str | None = None) -> Job:
    job = enqueue(db, KIND, owner=owner, params={
        "terms": terms.to_json(), "role": role, "inviter": inviter,
        "inviter_fingerprint": fingerprint_, "k": terms.n_clusters,
        "nodes": list(terms.nodes)}, stage="queued: joining the session")
    audit.record(db, "joint_create" if role == "inviter" else "joint_accept", actor=owner,
                 object_type="job", object_id=job.id, ip=ip,
                 detail={"nodes": list(terms.nodes), "k": terms.n_clusters,
                         "session": terms.session[:8]})
    db.commit()
    return job


def leave_job(ctx: PlatformContext, db: Session, owner: User, job: Job) -> None:
    """This node leaves ``job``'s session: the services end it for every node (a running
    job here then fails with the reason; a queued one fails at once). Commits."""
    from cipherseg.nodes.client import ServiceClient

    if job.status not in JOB_PENDING:
        raise ValidationError(f"this joint job is {job.status}; only a queued or running one "
                              "can be left")
    cfg = node_config(ctx.settings)
    session = str(job.params["terms"]["session"])
    reason = f"the owner of node {cfg.name} left the joint job"
    verify = str(cfg.ca_file) if cfg.ca_file else True
    for url, token_file, what in ((cfg.manager_url, cfg.manager_token_file, "manager"),
                                  (cfg.centre_url, cfg.centre_token_file, "centre")):
        try:
            client = ServiceClient(url, token=read_token_file(token_file), what=what,
                                   verify=verify)
        except ParameterError as exc:
            raise ValidationError(str(exc)) from exc
        try:
            client.abort(session, reason)  # best effort: a session not opened there is fine
        finally:
            client.close()
    db.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.QUEUED.value).values(
        status=JobStatus.FAILED.value, stage="failed", error=f"{reason}; nothing is released",
        finished_at=utcnow()))
    audit.record(db, "job_failed", actor=owner, object_type="job", object_id=job.id,
                 detail={"error": "left"})
    db.commit()


# ------------------------------------------------------------------------------ runner
def _withdraw(manager: Any, centre: Any, terms: JointTerms, exc: Exception) -> None:
    """Join and at once abort ``terms``' session (best effort), so the other nodes fail now
    with this node's reason instead of waiting for it until the join deadline."""
    from cipherseg.errors import CipherSegError

    reason = str(exc) if isinstance(exc, CipherSegError) else \
        f"a node failed before taking part ({type(exc).__name__})"
    try:
        manager.open({"terms": terms.to_json()})
    except CipherSegError:
        return  # the session has ended already, or the manager cannot be reached
    manager.abort(terms.session, reason)
    centre.abort(terms.session, reason)


def run_node_job(ctx: PlatformContext, job_id: int, sink: ProgressSink) -> None:
    """The worker's runner for ``joint_node`` jobs."""
    from cipherseg.analytics.rfm import segment_names
    from cipherseg.nodes.client import ServiceClient
    from cipherseg.nodes.owner import run_owner
    from cipherseg.platform.services.segmentation import profile_dict

    started = time.perf_counter()
    cfg = node_config(ctx.settings)
    with ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        terms = JointTerms.from_json(job.params["terms"])
        owner = s.get(User, job.owner_id)
        assert owner is not None
        snapshot = date.fromisoformat(terms.context["snapshot"])
        window = int(terms.context["window_days"])
        audit.record(s, "joint_start", actor=owner, object_type="job", object_id=job_id,
                     detail={"nodes": list(terms.nodes), "session": terms.session[:8]})
        s.commit()
        owner_id = owner.id
    try:
        manager = ServiceClient(cfg.manager_url, token=read_token_file(cfg.manager_token_file),
                                what="manager", verify=str(cfg.ca_file) if cfg.ca_file else True)
        centre = ServiceClient(cfg.centre_url, token=read_token_file(cfg.centre_token_file),
                               what="centre", verify=str(cfg.ca_file) if cfg.ca_file else True)
    except ParameterError as exc:
        raise ValidationError(str(exc)) from exc
    sink.update(0.02, "computing this node's customers' features", force=True)
    try:
        with ctx.sessions() as s:
            pseudonyms, X = node_features(ctx.vault, s, owner_id, snapshot, window)
        if not pseudonyms:
            raise ValidationError(f"node {cfg.name} has no customers with transactions in "
                                  "the agreed time window")
    except Exception as exc:  # the others must not wait for a node that cannot take part
        _withdraw(manager, centre, terms, exc)
        manager.close()
        centre.close()
        raise
    sink.update(0.05, f"joined; waiting for {', '.join(terms.nodes)}", force=True)

    def progress(stage: str, done: int, total: int) -> None:
        sink.update(0.1 + 0.85 * done / max(total, 1), f"joint k-means: iteration {done}")

    try:
        outcome = run_owner(terms, cfg.name, X, manager=manager, centre=centre,
                            contact_timeout=cfg.contact_seconds, progress=progress)
    finally:
        manager.close()
        centre.close()
    k = terms.n_clusters
    sizes = np.bincount(outcome.labels, minlength=k)
    profile = pd.DataFrame(np.expm1(outcome.centroids), columns=list(FEATURES))
    seg_names = segment_names(profile)
    sink.update(0.97, "storing this node's labels", force=True)
    with ctx.sessions() as s, sink.pause_if_sqlite():
        s.execute(delete(SegmentMember).where(SegmentMember.job_id == job_id))
        s.execute(delete(Segment).where(Segment.job_id == job_id))
        for i in range(k):
            s.add(Segment(job_id=job_id, position=i, name=seg_names[i], size=int(sizes[i]),
                          centroid=profile_dict(profile.iloc[i])))
        ids = dict(s.execute(select(Customer.pseudonym, Customer.id)
                             .where(Customer.owner_id == owner_id)).all())
        members = [{"job_id": job_id, "customer_id": ids[p], "pseudonym": p,
                    "segment_index": int(lab)}
                   for p, lab in zip(pseudonyms, outcome.labels, strict=True) if p in ids]
        for start in range(0, len(members), 5000):
            s.execute(insert(SegmentMember), members[start:start + 5000])
        result: dict[str, Any] = {
            "session": terms.session, "nodes": list(terms.nodes), "party_id": outcome.party_id,
            "n_customers": len(members), "n_iter": outcome.n_iter,
            "centroids_log1p": np.round(outcome.centroids, 6).tolist(),
            "init_centres_log1p": np.round(outcome.init_centres, 6).tolist(),
            "bytes_sent": outcome.bytes_sent, "bytes_received": outcome.bytes_received,
            "seconds": round(time.perf_counter() - started, 3),
            "seconds_protocol": round(outcome.seconds, 3),
            "sizes": "this node's customers per segment",
            "where": f"this node's owner party; manager {cfg.manager_url}, centre "
                     f"{cfg.centre_url}"}
        s.execute(update(Job).where(Job.id == job_id).values(
            status=JobStatus.DONE.value, progress=1.0, stage="done", result=result,
            finished_at=utcnow(), heartbeat_at=utcnow()))
        owner = s.get(User, owner_id)
        audit.record(s, "joint_finish", actor=owner, object_type="job", object_id=job_id,
                     detail={"customers": len(members), "k": k, "n_iter": outcome.n_iter,
                             "nodes": len(terms.nodes)})
        s.commit()
