"""Joint segmentation jobs across owner accounts: consent before running, protocol 4.2 in the
worker (parties in separate processes), per-owner labels, release to merchants.

Tolerance: ARI >= 0.999 against scikit-learn's KMeans on the pooled quantised features from the
same initial centres (the protocol is exact on the fixed-point grid); centroids within 1e-5
(stored rounded to 6 decimals)."""

from __future__ import annotations

import csv
import io
from datetime import date

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import select

from cipherseg.analytics.window import ResolvedWindow
from cipherseg.platform.demo_data import REFERENCE_DATE, demo_rows
from cipherseg.platform.joint.service import owner_features
from cipherseg.platform.models import AuditEvent, Customer, Job, Role, Segment, User

from .conftest import _HASH


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


def _add_owners(platform, *names: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        s.add_all([User(username=n, password_hash=_HASH[0], role=Role.OWNER.value, active=True)
                   for n in names])
        s.commit()
        return {u.username: u.id for u in s.scalars(select(User))}


def _upload_demo(platform, client, seed: int, n: int) -> None:  # type: ignore[no-untyped-def]
    customers, transactions = demo_rows(n_customers=n, seed=seed)
    client.upload("customers", "c.csv", _csv(["customer_id", "phone", "consent", "first_name",
                                               "timezone"], customers))
    client.upload("transactions", "t.csv", _csv(["transaction_id", "customer_id", "date",
                                                  "amount", "category"], transactions))
    platform.run_jobs()


def _job_id(platform, url: str) -> int:  # type: ignore[no-untyped-def]
    """The internal id of the joint job at ``url`` (URLs carry its joint number)."""
    with platform.ctx.sessions() as s:
        return int(s.scalars(select(Job.id).where(
            Job.kind == "joint", Job.number == int(url.rsplit("/", 1)[1]))).one())


def _job(platform, job_id: int) -> Job:  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        s.expunge(job)
        return job


@pytest.mark.slow
def test_joint_job_needs_every_consent_and_matches_pooled_kmeans(splatform) -> None:  # type: ignore[no-untyped-def]
    splatform.ctx.settings.centre_process = True  # manager, centre, owners: own processes
    ids = _add_owners(splatform, "mall2", "mall3", "mall4")
    owners = {n: splatform.client(n) for n in ("mall", "mall2", "mall3", "mall4")}
    for seed, (name, n) in enumerate((("mall", 150), ("mall2", 120), ("mall3", 90))):
        _upload_demo(splatform, owners[name], seed + 11, n)

    r = owners["mall"].post("/owner/joint", {"k": "3",
                                             "participants": [ids["mall2"], ids["mall3"]]})
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    job_id = _job_id(splatform, url)
    number = int(url.rsplit("/", 1)[1])
    assert number == 1  # the first joint segmentation, whatever ran before

    # a non-participant owner neither sees nor accepts it
    outsider = owners["mall4"]
    assert outsider.get(url).status_code == 404
    assert outsider.post(url + "/accept").status_code == 404
    assert f'href="{url}"' not in outsider.get("/owner/joint").text
    assert outsider.get(url + "/labels.csv").status_code == 404

    # nothing runs before every named owner has accepted
    assert splatform.run_jobs() == []
    assert owners["mall2"].post(url + "/accept").status_code == 303
    assert splatform.run_jobs() == [] and _job(splatform, job_id).status == "awaiting"
    page = owners["mall3"].get(url).text
    assert 'id="job-status">awaiting' in page
    # the page refreshes itself while the job waits or runs (issue 17: "queued" until
    # reloaded)
    assert f'hx-get="{url}" hx-trigger="every 2s"' in page
    assert owners["mall3"].post(url + "/accept").status_code == 303
    assert _job(splatform, job_id).status == "queued"
    assert owners["mall3"].post(url + "/accept").status_code == 409  # no longer awaiting
    assert splatform.run_jobs() == [job_id]
    job = _job(splatform, job_id)
    assert job.status == "done", job.error
    assert "separate processes" in job.result["where"]
    assert 'hx-trigger="every 2s"' not in owners["mall"].get(url).text

    # the stored model against scikit-learn on the pooled data from the same start
    window = job.result["window"]
    assert window["start"] is None and window["end"] == REFERENCE_DATE.isoformat()
    resolved = ResolvedWindow(None, date.fromisoformat(window["end"]))
    parts, names = [], []
    with splatform.ctx.sessions() as s:
        for name in ("mall", "mall2", "mall3"):
            p, X = owner_features(splatform.ctx.vault, s, ids[name], resolved)
            names.append(p)
            parts.append(X)
        segs = sorted(s.scalars(select(Segment).where(Segment.job_id == job_id)),
                      key=lambda x: x.position)
        actions = [a for a, in s.execute(select(AuditEvent.action).where(
            AuditEvent.object_type == "job", AuditEvent.object_id == str(job_id)))]
    pooled = np.vstack(parts)
    ref = KMeans(n_clusters=3, init=np.asarray(job.result["init_centres_log1p"]), n_init=1,
                 max_iter=100, tol=0.0).fit(pooled)
    assert np.abs(ref.cluster_centers_ - np.asarray(job.result["centroids_log1p"])).max() < 1e-5
    assert [x.size for x in segs] == np.bincount(ref.labels_, minlength=3).tolist()
    assert sum(x.size for x in segs) == 360 == job.result["n_customers"]
    for x, centre in zip(segs, np.expm1(ref.cluster_centers_), strict=True):
        assert abs(x.centroid["recency_days"] - centre[0]) < 1e-3 * max(1.0, centre[0])
        # recency counts from the window's end (the demo data's last day), not from today:
        # the demo's customers last bought 0 to 360 days before it (recency 1 to 361)
        assert 1 <= x.centroid["recency_days"] <= 361
    assert len({x.name for x in segs}) == 3 and not any(x.name[-1].isdigit() for x in segs)
    for a in ("joint_create", "joint_accept", "joint_start", "joint_finish"):
        assert a in actions, actions

    # each owner gets only its own customers' labels
    labels = []
    for name, own in zip(("mall", "mall2", "mall3"), names, strict=True):
        body = owners[name].get(url + "/labels.csv")
        assert body.status_code == 200
        rows = list(csv.DictReader(io.StringIO(body.text)))
        got = {row["pseudonym"]: int(row["segment"]) for row in rows}
        assert set(got) == set(own)
        labels.extend(got[p] for p in own)
        assert f'id="own-customers">{len(own)}<' in owners[name].get(url).text
    assert adjusted_rand_score(ref.labels_, labels) >= 0.999

    # merchants: nothing before release, then segments of at least the minimum size
    merchant = splatform.as_role(Role.MERCHANT)
    assert f"#{number}" not in merchant.get("/merchant/joint").text
    assert owners["mall2"].post(url + "/publish",
                                {"merchants": ["shop"]}).status_code == 403  # only the creator
    assert owners["mall"].post(url + "/publish", {"merchants": ["shop"]}).status_code == 303
    page = merchant.get("/merchant/joint").text
    assert f"joint segmentation #{number}" in page
    for x in segs:
        shown = f"<td>{x.name}</td><td>{x.size}</td>" in page
        assert shown == (x.size >= splatform.ctx.settings.min_segment_size)


def test_joint_job_validation_and_guarded_runner(splatform) -> None:  # type: ignore[no-untyped-def]
    ids = _add_owners(splatform, "mall2")
    mall = splatform.client("mall")
    r = mall.post("/owner/joint", {"k": "3", "participants": [ids["mall2"]]})
    assert r.status_code == 400 and "upload customers" in r.text
    mall.upload("customers", "c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n")
    splatform.run_jobs()
    r = mall.post("/owner/joint", {"k": "3"})
    assert r.status_code == 400 and "at least one other" in r.text
    r = mall.post("/owner/joint", {"k": "3", "participants": [ids["shop"]]})
    assert r.status_code == 400 and "active data owner" in r.text
    r = mall.post("/owner/joint", {"k": "99", "participants": [ids["mall2"]]})
    assert r.status_code == 400 and "between 2 and" in r.text
    r = mall.post("/owner/joint", {"k": "2", "participants": [ids["mall2"]]})
    assert r.status_code == 303
    assert r.headers["location"] == "/owner/joint/1"
    job_id = _job_id(splatform, r.headers["location"])
    # a job forced into the queue without every consent is refused by the runner
    with splatform.ctx.sessions() as s:
        job = s.get(Job, job_id)
        job.status = "queued"
        s.commit()
    assert splatform.run_jobs() == [job_id]
    job = _job(splatform, job_id)
    assert job.status == "failed" and "not every participant" in (job.error or "")
    # a participant whose account has no data fails the job with a reason
    with splatform.ctx.sessions() as s:
        job = s.get(Job, job_id)
        job.params = {**job.params, "accepted": job.params["participants"]}
        job.status = "queued"
        s.commit()
    splatform.run_jobs()
    job = _job(splatform, job_id)
    assert job.status == "failed" and "no participant has transactions" in (job.error or "")
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(Customer.id).where(Customer.owner_id == ids["mall2"])) is None
