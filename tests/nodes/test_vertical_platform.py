"""Issue 20 on the platform: the mall's platform (``cipherseg serve``, its own SQLite file and
data directory) and a merchant's node (``cipherseg vertical join`` in its own directory) with
the centre and manager services, all separate processes on loopback.

The merchant requests on the mall's platform, the mall's owner approves there, the mall's job
and the merchant's node run protocol 4.5; then (a) the shared customers' segments are a
k-means fixed point of the joined plaintext (scikit-learn from the released centroids
changes nothing) and the merchant's node has the same labels for the same customers; (b) the
owner releases them under its grants and the merchant composes a campaign on them;
(c) neither side's directory or log holds the other's planted values; (d) the merchant's
node dropping out fails the mall's job with the reason and stores nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cipherseg.errors import TransportError
from cipherseg.nodes.client import ServiceClient
from cipherseg.pii.keys import load_or_create_keyring
from cipherseg.pii.vault import PiiVault
from cipherseg.platform.demo_data import demo_rows
from cipherseg.platform.models import Customer, Job, JobKind, SegmentMember
from cipherseg.platform.nodes.jobs import node_features
from cipherseg.testing.joint_services import JointServices, joint_services
from cipherseg.testing.nodes import NodeClient, NodeHandle, csv_bytes, platform_node

pytestmark = pytest.mark.slow

CUSTOMER_HEADER = ["customer_id", "phone", "consent", "first_name", "timezone"]
TX_HEADER = ["transaction_id", "customer_id", "date", "amount", "category"]
MALL_MARKER = "7777.13"
CAFE_MARKERS = (2.7182818284, 1.6180339887)


def cafe_rows(customers: list[list[str]], seed: int, extra: int) -> list[tuple[str, float, float]]:
    """The cafe's own data: 70 % of the mall's customers (by phone) and ``extra`` others."""
    rng = np.random.default_rng(seed)
    chosen = [c[1] for c in customers if rng.random() < 0.7]
    chosen += [f"139{rng.integers(10**7, 10**8)}" for _ in range(extra)]
    group = rng.integers(0, 3, len(chosen))
    visits = np.log1p(rng.poisson(np.array([2, 10, 30])[group]))
    spend = np.log1p(rng.gamma(4, np.array([5, 20, 60])[group]))
    rows = [(p, float(v), float(s)) for p, v, s in zip(chosen, visits, spend, strict=True)]
    rows[0] = (rows[0][0], *CAFE_MARKERS)
    return rows


def write_cafe(home: Path, rows: list[tuple[str, float, float]]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "cafe.csv").write_text("phone,visits,spend\n" + "".join(
        f"{p},{v:.10f},{s:.10f}\n" for p, v, s in rows))


def start_cafe(services: JointServices, home: Path, terms: dict,  # type: ignore[type-arg]
               contact: float) -> subprocess.Popen[bytes]:
    (home / "terms.json").write_text(json.dumps(terms))
    for service, tokens in (("manager", services.manager_tokens),
                            ("centre", services.centre_tokens)):
        (home / f"{service}.token").write_text(tokens["cafe"] + "\n")
        (home / f"{service}.token").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    cmd = [sys.executable, "-m", "cipherseg", "vertical", "join", "--terms", "terms.json",
           "--node", "cafe", "--data", "cafe.csv", "--phone-region", "CN",
           "--manager", services.manager_url, "--manager-token-file", "manager.token",
           "--centre", services.centre_url, "--centre-token-file", "centre.token",
           "--out", "segments.csv", "--contact-seconds", str(contact)]
    log = (home / "node.log").open("ab")
    return subprocess.Popen(cmd, cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_job(client: NodeClient, number: int, seconds: float = 600) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/vertical/jobs/{number}")
        if job["status"] in ("done", "failed"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"job {number} still {job['status']} ({job['stage']})")


def mall_view(node: NodeHandle, number: int, terms: dict  # type: ignore[type-arg]
              ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The omniscient verifier reads the mall's database: features and labels by customer."""
    engine = create_engine(f"sqlite:///{node.data_dir / 'cipherseg.db'}")
    try:
        with Session(engine) as s:
            vault = PiiVault(load_or_create_keyring(node.data_dir / "keys" / "pii.keyring"))
            names, X = node_features(vault, s, 1,
                                     date.fromisoformat(terms["context"]["snapshot"]),
                                     int(terms["context"]["window_days"]))
            external = dict(s.execute(select(Customer.pseudonym, Customer.external_id)).all())
            job_id = s.scalars(select(Job.id).where(Job.kind == JobKind.VERTICAL_NODE.value,
                                                    Job.number == number)).one()
            labels = dict(s.execute(select(SegmentMember.pseudonym,
                                           SegmentMember.segment_index)
                                    .where(SegmentMember.job_id == job_id)).all())
    finally:
        engine.dispose()
    feats = {external[p]: x for p, x in zip(names, X, strict=True)}
    return feats, {external[p]: int(v) for p, v in labels.items()}


def test_mall_platform_and_merchant_node(tmp_path: Path) -> None:
    customers, transactions = demo_rows(n_customers=300, seed=17)
    first = transactions[0]
    transactions.append(["TMARK", first[1], first[2], MALL_MARKER, first[4]])
    cafe = cafe_rows(customers, seed=3, extra=60)
    home = tmp_path / "cafe"
    write_cafe(home, cafe)
    with ExitStack() as stack:
        services = stack.enter_context(joint_services(tmp_path / "services", ["mall", "cafe"],
                                                      contact_seconds=5.0))
        mall = stack.enter_context(platform_node(tmp_path / "nodes", "mall", services,
                                                 contact_seconds=5.0))
        owner, shop = mall.client("mall"), mall.client("shop")
        owner.upload("customers", csv_bytes(CUSTOMER_HEADER, customers))
        owner.upload("transactions", csv_bytes(TX_HEADER, transactions))

        # the request and the approval, on the mall's platform
        bad = shop.post("/api/v1/vertical/requests", {"owner": "mall", "node": "mall",
                                                      "columns": ["visits"], "k": 3})
        assert bad.status_code == 400 and "not this platform's node" in bad.text
        r = shop.post("/api/v1/vertical/requests", {"owner": "mall", "node": "cafe",
                                                    "columns": ["visits", "spend"], "k": 3})
        assert r.status_code == 201, r.text
        request_id = r.json()["id"]
        assert r.json()["status"] == "requested" and r.json()["terms"] is None
        assert shop.http.get(f"/merchant/vertical/{request_id}/terms.json").status_code == 409
        assert owner.post("/api/v1/vertical/requests", {"owner": "mall", "node": "cafe",
                                                        "columns": ["v"], "k": 3}
                          ).status_code == 403  # owners do not request
        jobs = owner.get("/api/v1/vertical/jobs")
        number = jobs[0]["number"]
        r = owner.post(f"/api/v1/vertical/jobs/{number}/approve", {"window_days": 3650})
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        assert owner.post(f"/api/v1/vertical/jobs/{number}/approve",
                          {"window_days": 3650}).status_code == 409
        terms = json.loads(shop.http.get(f"/merchant/vertical/{request_id}/terms.json").text)
        assert terms["nodes"] == ["mall", "cafe"]
        assert terms["features"] == [["recency", "frequency", "monetary"], ["visits", "spend"]]

        # the merchant's node, on the merchant's machine
        proc = start_cafe(services, home, terms, contact=5.0)
        assert proc.wait(timeout=600) == 0, (home / "node.log").read_text()
        job = wait_job(owner, number)
        assert job["status"] == "done", job["error"]

        # (a) a k-means fixed point of the joined plaintext; both sides agree
        feats, labels = mall_view(mall, number, terms)
        by_phone = {c[1]: c[0] for c in customers}
        merchant = {by_phone[p]: (v, s) for p, v, s in cafe if p in by_phone}
        shared = sorted(set(feats) & set(merchant))
        assert sorted(labels) == shared and job["result"]["n_shared"] == len(shared)
        joined = np.array([[*feats[c], *merchant[c]] for c in shared])
        got = np.array([labels[c] for c in shared])
        centres = np.array(job["result"]["centroids"])
        ref = KMeans(3, init=centres, n_init=1, max_iter=100, tol=0).fit(joined)
        assert adjusted_rand_score(ref.labels_, got) >= 0.999
        np.testing.assert_allclose(ref.cluster_centers_, centres, atol=1e-4)
        cafe_labels = {by_phone.get(line.split(",")[0].removeprefix("+86")): int(
            line.split(",")[1]) for line in (home / "segments.csv").read_text().splitlines()[1:]}
        assert cafe_labels == labels

        # (b) released under the mall's grants; the merchant composes a campaign on it
        r = owner.post(f"/api/v1/vertical/jobs/{number}/publish", {"merchants": ["shop"]})
        assert r.status_code == 200 and r.json()["released_to"] == ["shop"], r.text
        seg = max(job["segments"], key=lambda s: s["size"])
        assert seg["name"] in shop.http.get("/merchant/joint").text
        job_id = r.json()["id"]
        page = shop.http.get(f"/merchant/campaigns/new?job={job_id}")
        assert page.status_code == 200 and seg["name"] in page.text
        found = re.search(r'name="use" value="(\d+)"(?! disabled)', page.text)
        assert found is not None, "no segment to target"
        position = int(found.group(1))
        created = shop.http.post("/merchant/campaigns", data={
            "job_id": job_id, "name": "vertical test", "shop_name": "Cafe",
            "pos": [position], "tpl": ["Hello {first_name}, a coffee on us"],
            "use": [position], "csrf_token": shop.csrf},
            headers={"X-CSRF-Token": shop.csrf})
        assert created.status_code == 303, created.text[:2000]

        # (c) neither side holds the other's values
        mall_blobs = [p.read_bytes() for p in mall.data_dir.rglob("*") if p.is_file()]
        mall_blobs.append(mall.log.read_bytes())
        cafe_blobs = [p.read_bytes() for p in home.rglob("*") if p.is_file()]
        cafe_needles = [x for v in CAFE_MARKERS for x in (
            f"{v:.10f}".encode(), f"{v:.6f}".encode(), struct.pack("<d", v),
            struct.pack(">d", v))]
        mall_needles = [MALL_MARKER.encode(), struct.pack("<d", 7777.13),
                        struct.pack(">d", 7777.13), b"TMARK"] + [
            c[0].encode() for c in customers[:50]]
        assert any(x in b for b in cafe_blobs for x in cafe_needles)  # the scan finds them
        # the mall's own amounts are encrypted at rest: the scan's sanity check is its ids
        assert any(c[0].encode() in b for b in mall_blobs for c in customers[:50])
        assert not [x for x in cafe_needles if any(x in b for b in mall_blobs)]
        assert not [x for x in mall_needles if any(x in b for b in cafe_blobs)]

        # (d) the merchant's node dropping out
        r = shop.post("/api/v1/vertical/requests", {"owner": "mall", "node": "cafe",
                                                    "columns": ["visits", "spend"], "k": 3})
        second = owner.get("/api/v1/vertical/jobs")[0]["number"]
        owner.post(f"/api/v1/vertical/jobs/{second}/approve", {"window_days": 3650})
        terms = json.loads(shop.http.get(
            f"/merchant/vertical/{r.json()['id']}/terms.json").text)
        big = cafe + [(f"137{i:08d}", 1.0, 1.0) for i in range(15_000)]  # a longer PSI
        write_cafe(home, big)
        (home / "segments.csv").unlink()
        watcher = ServiceClient(services.manager_url, token=services.manager_tokens["cafe"],
                                what="manager")
        proc = start_cafe(services, home, terms, contact=5.0)
        deadline = time.monotonic() + 120
        while _state(watcher, terms["session"]) != "running":
            assert time.monotonic() < deadline and proc.poll() is None, "never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        job = wait_job(owner, second, seconds=120)
        assert job["status"] == "failed", job
        assert "node cafe stopped responding" in job["error"], job["error"]
        assert job["segments"] == [] and job["result"] is None
        assert not (home / "segments.csv").exists()
        assert owner.post(f"/api/v1/vertical/jobs/{second}/publish",
                          {"merchants": ["shop"]}).status_code == 400


def _state(watcher: ServiceClient, session: str) -> str:
    try:
        return str(watcher.session_status(session)["state"])
    except TransportError:
        return "unknown"
