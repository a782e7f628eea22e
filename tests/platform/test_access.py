"""Who asks, who sees, who runs it: releases as grants to named merchants (pages, API,
campaign audiences, revocation stopping queued sends), segmentation requests, passwords
(own change, administrator's one-time reset, forced change, command line), the permission
matrix and its guard rails, the audit filter, and numbering per kind of object."""

from __future__ import annotations

import ast
import csv
import io
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from cipherseg.clock import utcnow
from cipherseg.platform import audit
from cipherseg.platform.app import make_worker
from cipherseg.platform.campaigns import service as campaigns
from cipherseg.platform.campaigns.settings import CampaignSettings
from cipherseg.platform.demo_data import demo_rows
from cipherseg.platform.models import (
    MESSAGING,
    AuditEvent,
    Customer,
    Job,
    ReleaseGrant,
    Role,
    Segment,
    SegmentMember,
    User,
)
from cipherseg.platform.numbering import job_scope, next_number
from cipherseg.platform.permissions import DEFAULT_MATRIX, Permission
from cipherseg.platform.security import hash_password
from cipherseg.platform.services.permissions import matrix

PASSWORD = "correct horse battery"
CUSTOMERS, TRANSACTIONS = demo_rows(n_customers=130, seed=11)
TEMPLATE = 'Hi {{ first_name|default("there") }}, {{ segment_name }} night! {{ opt_out }}'
SRC = Path(__file__).resolve().parents[2] / "src" / "cipherseg"


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


CUST_CSV = _csv(["customer_id", "phone", "consent", "first_name", "timezone"], CUSTOMERS)
TX_CSV = _csv(["transaction_id", "customer_id", "date", "amount", "category"], TRANSACTIONS)


def _add_user(platform, name: str, role: Role) -> int:  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        user = User(username=name, password_hash=hash_password(PASSWORD), role=role.value,
                    active=True)
        s.add(user)
        s.commit()
        return user.id


def _finished_segmentation(platform) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """The owner's customers uploaded and a finished (not released) segmentation of them
    (stored directly: its computation is tested elsewhere). Returns (job id, number)."""
    owner = platform.client("mall")
    assert owner.upload("customers", "c.csv", CUST_CSV).status_code == 303
    platform.run_jobs()
    with platform.ctx.sessions() as s:
        ids = list(s.scalars(select(Customer.id).order_by(Customer.external_id)))
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id,
                  params={"k": 2, "features": ["recency"], "scheme": "ckks"},
                  number=next_number(s, job_scope("segmentation", owner_id)),
                  result={"n_customers": len(ids), "n_iter": 3}, finished_at=utcnow())
        s.add(job)
        s.flush()
        for pos, members in enumerate((ids[:70], ids[70:])):
            s.add(Segment(job_id=job.id, position=pos, name=("Loyal", "Regular")[pos],
                          size=len(members),
                          centroid={"recency_days": 9.0, "frequency": 4.0, "monetary": 80.0}))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        return job.id, job.number


def _campaign(shop, job_id: int, name: str = "Spring"):  # type: ignore[no-untyped-def]
    return shop.post("/merchant/campaigns", {
        "job_id": str(job_id), "name": name, "shop_name": "Joy Mall", "pos": ["0", "1"],
        "tpl": [TEMPLATE, TEMPLATE], "use": ["0", "1"]})


# ------------------------------------------------------------------------------ grants
def test_a_release_is_seen_and_targeted_only_by_the_merchants_it_names(splatform) -> None:  # type: ignore[no-untyped-def]
    _add_user(splatform, "shop2", Role.MERCHANT)
    job_id, number = _finished_segmentation(splatform)
    owner, shop, shop2 = (splatform.client(n) for n in ("mall", "shop", "shop2"))
    sms = splatform.client("sms")
    url = f"/owner/jobs/{number}"

    # the owner chooses whom to release to; nothing chosen is an error in words
    page = owner.get(url).text
    assert 'name="merchants" value="shop"' in page and 'value="shop2"' in page
    r = owner.post(url + "/publish")
    assert r.status_code == 400 and "choose at least one merchant" in r.text
    r = owner.api("POST", f"/api/v1/jobs/{number}/publish", json={"merchants": ["nobody"]})
    assert r.status_code == 400 and "no merchant account called 'nobody'" in r.json()["detail"]
    r = owner.api("POST", f"/api/v1/jobs/{number}/publish", json={"merchants": ["sms"]})
    assert r.status_code == 400  # the operator is no merchant
    r = owner.api("POST", f"/api/v1/jobs/{number}/publish", json={"merchants": ["shop"]})
    assert r.status_code == 200 and r.json()["released_to"] == ["shop"]
    assert owner.api("POST", f"/api/v1/jobs/{number}/publish",  # idempotent
                     json={"merchants": ["shop"]}).json()["released_to"] == ["shop"]

    # shop sees it (page and API); shop2 sees nothing and cannot target it
    assert "Loyal" in shop.get("/merchant/segments").text
    releases = shop.api("GET", "/api/v1/releases").json()
    assert [(r["owner"], r["job_id"], r["kind"]) for r in releases] == \
        [("mall", number, "segmentation")]
    assert "Loyal" not in shop2.get("/merchant/segments").text
    assert shop2.api("GET", "/api/v1/releases").json() == []
    assert "No segmentation has been released to you yet" in \
        shop2.get("/merchant/campaigns/new").text
    r = _campaign(shop2, job_id)
    assert r.status_code == 400 and "not released to you" in r.text
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MESSAGING.campaigns)) == 0
    # the operator sees names, sizes and to whom, not profiles
    aud = sms.api("GET", "/api/v1/audiences").json()
    assert aud[0]["merchants"] == ["shop"] and aud[0]["segments"][0]["profile"] is None
    assert "<td>shop</td>" in sms.get("/operator/audiences").text

    # granting shop2 too; then revoking shop2 through the API
    assert owner.post(url + "/publish", {"merchants": ["shop2"]}).status_code == 303
    assert len(shop2.api("GET", "/api/v1/releases").json()) == 1
    r = owner.api("DELETE", f"/api/v1/releases/{number}/merchants/shop2")
    assert r.status_code == 204
    assert owner.api("DELETE", f"/api/v1/releases/{number}/merchants/shop2").status_code == 404
    assert shop2.api("GET", "/api/v1/releases").json() == []
    assert len(shop.api("GET", "/api/v1/releases").json()) == 1
    page = owner.get(url).text
    assert "revoked" in page and ">Revoke<" in page  # shop2 revoked, shop still active
    # another merchant's or owner's attempt is refused
    assert shop.api("DELETE", f"/api/v1/releases/{number}/merchants/shop").status_code == 403
    with splatform.ctx.sessions() as s:
        events = [(e.action, (e.detail or {}).get("merchant")) for e in s.scalars(
            select(AuditEvent).where(AuditEvent.action.in_(["release_grant", "release_revoke"]))
            .order_by(AuditEvent.id))]
    assert events == [("release_grant", "shop"), ("release_grant", "shop2"),
                      ("release_revoke", "shop2")]


def test_revoking_stops_queued_sends_and_keeps_sent_messages(splatform) -> None:  # type: ignore[no-untyped-def]
    campaigns.configure(splatform.ctx, CampaignSettings(quiet_hours="off", sms_rate=1000.0))
    job_id, number = _finished_segmentation(splatform)
    owner, shop = splatform.client("mall"), splatform.client("shop")
    assert owner.post(f"/owner/jobs/{number}/publish", {"merchants": ["shop"]}).status_code \
        == 303
    # campaign A goes out completely
    sent_url = _campaign(shop, job_id, "Sent").headers["location"].split("?")[0]
    assert shop.post(sent_url + "/send", {"confirm": "yes"}).status_code == 303
    splatform.run_jobs()
    store = campaigns.store_for(splatform.ctx)
    sent_id = int(sent_url.rsplit("/", 1)[1])
    delivered = store.state_counts(sent_id)
    assert store.campaign(sent_id).status == "completed" and delivered.get("delivered")
    # campaign B is held by quiet hours: every message queued; a draft C waits
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    campaigns.configure(splatform.ctx, CampaignSettings(
        quiet_hours=f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}",
        sms_rate=1000.0, frequency_cap="5/7"))
    held_url = _campaign(shop, job_id, "Held").headers["location"].split("?")[0]
    held_id = int(held_url.rsplit("/", 1)[1])
    draft_id = int(_campaign(shop, job_id, "Draft").headers["location"].split("?")[0]
                   .rsplit("/", 1)[1])
    assert shop.post(held_url + "/send", {"confirm": "yes"}).status_code == 303
    owner.upload("customers", "again.csv", CUST_CSV)  # a job queued behind the campaign
    worker = make_worker(splatform.ctx, threads=1)
    worker.run_one()                                  # the campaign job: held, it sleeps
    held = store.state_counts(held_id)
    assert held.get("queued", 0) > 50 and not {"sent", "delivered"} & set(held)

    r = owner.post(f"/owner/jobs/{number}/revoke", {"merchant": "shop"})
    assert r.status_code == 303 and "revoked" in owner.get(r.headers["location"]).text
    assert store.campaign(held_id).status == "cancelled"
    assert store.campaign(draft_id).status == "cancelled"
    after = store.state_counts(held_id)                      # the holdout stays recorded
    assert "queued" not in after and \
        after.get("skipped", 0) == held["queued"] + held.get("skipped", 0)
    assert store.state_counts(sent_id) == delivered          # sent ones stay reported
    assert store.campaign(sent_id).status == "completed"
    assert "Loyal" not in shop.get("/merchant/segments").text
    page = shop.get(sent_url).text
    assert f'data-testid="n-delivered">{delivered["delivered"]}<' in page
    worker.run_until_empty()                                 # the continuation sends nothing
    with splatform.ctx.engine.connect() as conn:
        n_outbox = conn.execute(select(func.count()).select_from(MESSAGING.outbox)).scalar()
    assert n_outbox == delivered["delivered"]
    with splatform.ctx.sessions() as s:
        stopped = set(s.scalars(select(AuditEvent.object_id).where(
            AuditEvent.action == "campaign_stopped")))
    assert stopped == {str(held_id), str(draft_id)}


def test_an_audience_of_a_revoked_release_is_empty_and_cannot_be_sent(splatform) -> None:  # type: ignore[no-untyped-def]
    """Defence in depth: a grant revoked without the listener (e.g. directly in the
    database) still empties the audience and blocks sending and approval."""
    campaigns.configure(splatform.ctx, CampaignSettings(quiet_hours="off"))
    job_id, number = _finished_segmentation(splatform)
    owner, shop = splatform.client("mall"), splatform.client("shop")
    owner.post(f"/owner/jobs/{number}/publish", {"merchants": ["shop"]})
    url = _campaign(shop, job_id).headers["location"].split("?")[0]
    eligible = re.compile(r"Send this campaign to <strong data-testid=\"send-count\">(\d+)<")
    assert int(eligible.search(shop.get(url).text).group(1)) > 100  # type: ignore[union-attr]
    with splatform.ctx.sessions() as s:
        grant = s.scalars(select(ReleaseGrant)).one()
        grant.revoked_at = utcnow()
        s.commit()
    assert eligible.search(shop.get(url).text).group(1) == "0"  # type: ignore[union-attr]
    r = shop.post(url + "/send", {"confirm": "yes"})
    assert r.status_code == 409 and "revoked the release" in r.text


# ------------------------------------------------------------------------------ requests
@pytest.mark.slow
def test_a_request_is_approved_runs_and_is_released_to_its_merchant(splatform) -> None:  # type: ignore[no-untyped-def]
    _add_user(splatform, "shop2", Role.MERCHANT)
    owner, shop, shop2, sms = (splatform.client(n) for n in ("mall", "shop", "shop2", "sms"))
    owner.upload("customers", "c.csv", CUST_CSV)
    owner.upload("transactions", "t.csv", TX_CSV)
    splatform.run_jobs()

    # wrong forms say what is wrong, in words
    base = {"owner": "mall", "purpose": "spring offer", "k": "3", "window": "days",
            "window_days": "90", "features": ["recency", "frequency", "monetary"]}
    for change, words in (({"owner": ""}, "choose the data owner"),
                          ({"purpose": "  "}, "say what the segmentation is for"),
                          ({"k": "x"}, "whole number"), ({"k": "1"}, "between 2 and"),
                          ({"window_days": "0"}, "between 1 and 3650"),
                          ({"window": "range", "window_from": "2026-13-01"}, "is not a date"),
                          ({"window": "range", "window_from": "2026-05-01",
                            "window_to": "2026-04-01"}, "start date is after its end"),
                          ({"features": []}, "at least one feature")):
        r = shop.post("/merchant/requests", {**base, **change})
        assert r.status_code == 400 and words in r.text, (change, r.text[-2000:])
        assert "purpose" in change or "spring offer" in r.text  # the form is kept
    r = shop.post("/merchant/requests", base)
    assert r.status_code == 303
    req_url = r.headers["location"].split("?")[0]
    req_id = int(req_url.rsplit("/", 1)[1])
    assert "waiting for the data owner" in shop.get(req_url).text
    # another merchant cannot see it; the operator sees counts only
    assert shop2.get(req_url).status_code == 404
    assert shop2.api("GET", "/api/v1/requests").json() == []
    assert sms.api("GET", "/api/v1/request-counts").json() == \
        {"pending": 1, "approved": 0, "declined": 0, "withdrawn": 0}
    assert "spring offer" not in sms.get("/operator/audiences").text

    # the owner sees it, approves: the run is queued and granted to shop in advance
    assert owner.get("/owner/jobs").text.count("waiting for your decision") == 1
    incoming = owner.api("GET", "/api/v1/incoming-requests").json()
    assert [(i["id"], i["merchant"], i["window"]) for i in incoming] == \
        [(req_id, "shop", "last 90 days")]
    r = owner.post(f"/owner/requests/{req_id}/approve")
    assert r.status_code == 303 and r.headers["location"].startswith("/owner/jobs/1")
    assert owner.post(f"/owner/requests/{req_id}/approve").status_code == 400  # decided
    assert "segmentation running" in shop.get(req_url).text
    assert shop.api("GET", "/api/v1/releases").json() == []  # not finished yet
    splatform.run_jobs()
    assert "released to the merchant" in shop.get(req_url).text
    releases = shop.api("GET", "/api/v1/releases").json()
    assert [(r["owner"], r["job_id"]) for r in releases] == [("mall", 1)]
    assert shop2.api("GET", "/api/v1/releases").json() == []
    with splatform.ctx.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "segmentation")).one()
        assert job.status == "done" and job.params["k"] == 3
        assert job.params["request_id"] == req_id
        grant = s.scalars(select(ReleaseGrant)).one()
        assert grant.request_id == req_id and grant.job_id == job.id

    # a second request, "choose k for me", is declined with a reason
    r = shop.api("POST", "/api/v1/requests", json={
        "owner": "mall", "purpose": "lapsed customers", "k": None,
        "window_from": "2026-01-01", "window_to": "2026-06-30", "features": ["recency"]})
    assert r.status_code == 201 and r.json()["k"] is None
    second = r.json()["id"]
    assert r.json()["window"] == "2026-01-01 to 2026-06-30"
    r = owner.api("POST", f"/api/v1/incoming-requests/{second}/decline", json={"reason": ""})
    assert r.status_code == 422
    r = owner.post(f"/owner/requests/{second}/decline", {"reason": " "})
    assert r.status_code == 400 and "say why you decline" in r.text
    r = owner.post(f"/owner/requests/{second}/decline", {"reason": "not enough history"})
    assert r.status_code == 303
    page = shop.get(f"/merchant/requests/{second}").text
    assert "declined" in page and "not enough history" in page
    # a third is withdrawn by the merchant before the owner decides
    third = shop.api("POST", "/api/v1/requests", json={"owner": "mall", "purpose": "x"}).json()
    assert shop.post(f"/merchant/requests/{third['id']}/withdraw").status_code == 303
    assert owner.post(f"/owner/requests/{third['id']}/approve", {"k": "3"}).status_code == 400
    assert sms.api("GET", "/api/v1/request-counts").json() == \
        {"pending": 0, "approved": 1, "declined": 1, "withdrawn": 1}
    # an owner cannot decide another owner's requests
    _add_user(splatform, "mall2", Role.OWNER)
    assert splatform.client("mall2").post(f"/owner/requests/{req_id}/approve").status_code \
        == 404
    with splatform.ctx.sessions() as s:
        actions = [a for (a,) in s.execute(select(AuditEvent.action).where(
            AuditEvent.object_type == "request").order_by(AuditEvent.id))]
    assert actions == ["request_create", "request_approve", "request_create",
                       "request_decline", "request_create", "request_withdraw"]


def test_a_choose_k_request_runs_k_2_to_8_in_its_window_and_keeps_the_recommendation(
        splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 17: a merchant's window, features and "choose for me" reach the job; recency
    counts from the window's end (the data's last day), not from today."""
    owner, shop = splatform.client("mall"), splatform.client("shop")
    owner.upload("customers", "c.csv", CUST_CSV)
    owner.upload("transactions", "t.csv", TX_CSV)
    splatform.run_jobs()
    req = shop.api("POST", "/api/v1/requests", json={
        "owner": "mall", "purpose": "any", "k": None, "window_days": 120,
        "features": ["recency", "frequency", "monetary", "categories"]}).json()
    page = owner.get(f"/owner/requests/{req['id']}").text
    assert "the merchant left this to you" in page
    r = owner.post(f"/owner/requests/{req['id']}/approve", {"k": "four"})
    assert r.status_code == 400 and "give k as a whole number" in r.text
    r = owner.post(f"/owner/requests/{req['id']}/approve", {"k": ""})
    assert r.status_code == 303
    splatform.run_jobs()
    last = max(date.fromisoformat(t[2]) for t in TRANSACTIONS)
    with splatform.ctx.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "segmentation")).one()
        segs = list(s.scalars(select(Segment).where(Segment.job_id == job.id)))
    assert job.status == "done", job.error
    assert job.params["k"] is None and job.params["window"]["days"] == 120
    assert job.params["features"] == ["recency", "frequency", "monetary", "categories"]
    assert job.result["window"]["start"] == (last - timedelta(days=119)).isoformat()
    assert job.result["window"]["end"] == last.isoformat()
    choice = job.result["choose_k"]
    assert choice["ks"] == list(range(2, 9))
    scored = {k: sil for k, sil in zip(choice["ks"], choice["silhouette"], strict=True)
              if sil is not None}
    best = max(scored.values())
    expected = min(k for k, sil in scored.items() if sil >= best - 0.01)
    assert choice["recommended"] == expected == job.result["k"] == len(segs)
    # every customer bought within the window: recency 1 (on its last day) to 120
    assert all(1 <= x.centroid["recency_days"] <= 120 for x in segs)
    shares = [key for key in segs[0].centroid if key.startswith("share:")]
    assert len(shares) == 3 and job.result["columns"][3:] == shares
    page = owner.get("/owner/jobs/1").text
    assert 'id="choose-k"' in page and f"Recommended: k = {choice['recommended']}" in page
    assert "<svg" in page and "last 120 days" in page
    assert "released to the merchant" in shop.get(f"/merchant/requests/{req['id']}").text
    # the owner may still name k for a request that leaves it open
    other = shop.api("POST", "/api/v1/requests", json={"owner": "mall", "purpose": "any",
                                                       "k": None}).json()
    r = owner.api("POST", f"/api/v1/incoming-requests/{other['id']}/approve", json={"k": 5})
    assert r.status_code == 200 and r.json()["status"] == "running"
    with splatform.ctx.sessions() as s:
        assert s.scalars(select(Job).where(Job.kind == "segmentation")
                         .order_by(Job.id.desc())).first().params["k"] == 5


# ------------------------------------------------------------------------------ passwords
def test_a_user_changes_their_own_password(splatform) -> None:  # type: ignore[no-untyped-def]
    shop, other = splatform.client("shop"), splatform.client("shop")
    for form, words in (({"current": "wrong", "new": "a new passphrase", "confirm":
                          "a new passphrase"}, "the current password is wrong"),
                        ({"current": PASSWORD, "new": "short", "confirm": "short"},
                         "at least 10 characters"),
                        ({"current": PASSWORD, "new": "a new passphrase", "confirm": "other"},
                         "confirmation differ"),
                        ({"new": "a new passphrase", "confirm": "a new passphrase"},
                         "enter your current password")):
        r = shop.post("/account/password", form)
        assert r.status_code == 400 and words in r.text, words
    r = shop.post("/account/password", {"current": PASSWORD, "new": "a new passphrase",
                                        "confirm": "a new passphrase"})
    assert r.status_code == 303 and "password_changed" in r.headers["location"]
    assert shop.get("/merchant/segments").status_code == 200      # this browser goes on
    assert other.get("/merchant/segments").status_code == 303     # the other session ended
    assert splatform.client().login("shop").status_code == 400    # old password gone
    assert splatform.client().login("shop", "a new passphrase").status_code == 303
    # the API does the same, and hands out a new session cookie
    api = splatform.client("shop", )
    api.login("shop", "a new passphrase")
    r = api.api("POST", "/api/v1/me/password", json={"current_password": "a new passphrase",
                                                     "new_password": "a third passphrase"})
    assert r.status_code == 204
    assert api.api("GET", "/api/v1/me").status_code == 200


def test_reset_gives_a_one_time_password_that_must_be_changed(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    victim_session = splatform.client("shop")
    with splatform.ctx.sessions() as s:
        shop_id = s.scalars(select(User.id).where(User.username == "shop")).one()
    r = admin.post(f"/admin/users/{shop_id}/reset-password")
    assert r.status_code == 200
    temp = re.search(r'id="temporary-password">([a-z0-9-]+)<', r.text).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", temp)
    assert temp not in admin.get("/admin/users").text               # shown once only
    assert victim_session.get("/merchant/segments").status_code == 303  # sessions ended
    assert splatform.client().login("shop").status_code == 400      # old password gone

    shop = splatform.client()
    r = shop.login("shop", temp)
    assert r.status_code == 303 and r.headers["location"] == "/account/password"
    # every other page sends the user to the password form; the API refuses
    for url in ("/merchant/segments", "/merchant/campaigns", "/account", "/"):
        r = shop.get(url)
        assert r.status_code == 303 and r.headers["location"] == "/account/password", url
    r = shop.api("GET", "/api/v1/releases")
    assert r.status_code == 403 and "temporary password" in r.json()["detail"]
    assert shop.api("GET", "/api/v1/me").json()["must_change_password"] is True
    page = shop.get("/account/password").text
    assert "Choose a new password" in page and 'name="current"' not in page
    assert 'href="/merchant/segments"' not in page                   # no navigation yet
    # the temporary password worked once: a second login with it fails
    assert splatform.client().login("shop", temp).status_code == 400
    r = shop.post("/account/password", {"new": "my own passphrase", "confirm": "nope"})
    assert r.status_code == 400 and "confirmation differ" in r.text
    r = shop.post("/account/password", {"new": "my own passphrase",
                                        "confirm": "my own passphrase"})
    assert r.status_code == 303 and r.headers["location"].startswith("/merchant/segments")
    assert shop.get("/merchant/segments").status_code == 200
    assert splatform.client().login("shop", "my own passphrase").status_code == 303
    with splatform.ctx.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).where(
            AuditEvent.action.like("password%")).order_by(AuditEvent.id))]
    assert actions == ["password_reset", "password_change"]
    # an administrator cannot reset their own password here
    with splatform.ctx.sessions() as s:
        admin_id = s.scalars(select(User.id).where(User.username == "admin")).one()
    r = admin.post(f"/admin/users/{admin_id}/reset-password")
    assert r.status_code == 400 and "Your account" in r.text


def test_a_temporary_password_expires(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    with splatform.ctx.sessions() as s:
        shop_id = s.scalars(select(User.id).where(User.username == "shop")).one()
    temp = admin.api("POST", f"/api/v1/users/{shop_id}/reset-password").json()
    assert temp["username"] == "shop"
    with splatform.ctx.sessions() as s:
        user = s.get(User, shop_id)
        assert user is not None and user.must_change_password
        user.password_expires_at = utcnow() - timedelta(minutes=1)
        s.commit()
    r = splatform.client().login("shop", temp["temporary_password"])
    assert r.status_code == 400 and "temporary password has expired" in r.text


# ------------------------------------------------------------------------------ permissions
def test_permission_edits_take_effect_within_the_guard_rails(splatform) -> None:  # type: ignore[no-untyped-def]
    admin, shop, sms = (splatform.client(n) for n in ("admin", "shop", "sms"))
    assert 'href="/merchant/requests"' in shop.get("/merchant/segments").text
    grants = [f"{r.value}:{p.value}" for r, perms in DEFAULT_MATRIX.items() for p in perms]
    # guard rails: owner data only for owners; the administrator keeps users.manage
    r = admin.post("/admin/permissions", {"grant": [*grants, "merchant:segment.run"]})
    assert r.status_code == 400 and "Merchant cannot hold segment.run" in r.text
    r = admin.post("/admin/permissions", {"grant": [g for g in grants
                                                    if g != "admin:users.manage"]})
    assert r.status_code == 400 and "must keep users.manage" in r.text
    r = admin.api("PUT", "/api/v1/permissions", json={"matrix": {"admin": []}})
    assert r.status_code == 400
    with splatform.ctx.sessions() as s:
        assert matrix(s) == DEFAULT_MATRIX                       # nothing was saved
    # merchants may no longer request; the operator may read the audit log
    edited = [g for g in grants if g != "merchant:request.create"] + ["operator:audit.read"]
    r = admin.post("/admin/permissions", {"grant": edited})
    assert r.status_code == 303
    assert shop.get("/merchant/requests").status_code == 403
    assert shop.api("POST", "/api/v1/requests", json={"owner": "mall", "purpose": "x"}) \
        .status_code == 403
    assert 'href="/merchant/requests"' not in shop.get("/merchant/segments").text
    assert 'href="/admin/audit"' in sms.get("/operator/audiences").text
    assert sms.get("/admin/audit").status_code == 200
    assert Permission.AUDIT_READ.value in sms.api("GET", "/api/v1/me").json()["permissions"]
    page = admin.get("/admin/permissions").text
    assert 'value="operator:audit.read" aria-label="Advertising operator: Read the audit log"' \
           ' checked' in page
    # restoring the defaults
    assert admin.post("/admin/permissions", {"defaults": "yes"}).status_code == 303
    assert shop.get("/merchant/requests").status_code == 200
    assert sms.get("/admin/audit").status_code == 403
    with splatform.ctx.sessions() as s:
        changes = [e.detail for e in s.scalars(select(AuditEvent).where(
            AuditEvent.action == "permission_change").order_by(AuditEvent.id))]
    assert changes == [{"granted": ["operator:audit.read"],
                        "revoked": ["merchant:request.create"]},
                       {"granted": ["merchant:request.create"],
                        "revoked": ["operator:audit.read"]}]


def test_a_role_with_no_permission_lands_on_its_account_page(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    grants = [f"{r.value}:{p.value}" for r, perms in DEFAULT_MATRIX.items() for p in perms
              if r != Role.CENTRE]
    assert admin.post("/admin/permissions", {"grant": grants}).status_code == 303
    centre = splatform.client()
    r = centre.login("centre")
    assert r.headers["location"] == "/account"
    page = centre.get("/account").text
    assert "Nothing yet" in page and centre.get("/centre/jobs").status_code == 403


# ------------------------------------------------------------------------------ admin forms
def test_user_form_has_no_default_role_and_says_what_is_wrong(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    page = admin.get("/admin/users").text
    start = page.index('id="create-user"')
    form = page[start:page.index("</form>", start)]
    assert re.search(r'<option value="" selected disabled>Choose a role', form)
    assert "pattern=" not in form
    for data, words in (({"username": "new user", "password": "long enough pw",
                          "role": "owner"}, "may contain only letters, digits and _ . @ - "
                                            "(it contains a space)"),
                        ({"username": "x", "password": "long enough pw", "role": "owner"},
                         "2 to 64 characters (it has 1)"),
                        ({"username": "newuser", "password": "long enough pw"},
                         "choose the new user&#39;s role"),
                        ({"username": "newuser", "password": "short", "role": "owner"},
                         "at least 10 characters")):
        r = admin.post("/admin/users", data)
        assert r.status_code == 400 and words in r.text, (data, words)
        assert f'value="{data["username"]}"' in r.text       # the name is kept
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 5


# ------------------------------------------------------------------------------ audit
def _recorded_literals() -> set[str]:
    """Every string literal passed as the action of an ``audit.record`` call in the code."""
    found = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) == "record" and len(node.args) >= 2:
                arg = node.args[1]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def test_the_audit_filter_offers_every_action_the_code_records(splatform) -> None:  # type: ignore[no-untyped-def]
    literals = _recorded_literals()
    assert len(literals) > 20
    assert literals <= set(audit.ACTIONS), literals - set(audit.ACTIONS)
    with splatform.ctx.sessions() as s, pytest.raises(ValueError, match="AuditAction"):
        audit.record(s, "made_up_action", actor=None)
    page = splatform.client("admin").get("/admin/audit").text
    offered = set(re.findall(r'<option value="([a-z_]+)"', page))
    assert offered == set(audit.ACTIONS)
    for action in ("campaign_approve", "opt_out_added", "suppression_added", "joint_accept",
                   "release_revoke", "password_reset", "permission_change"):
        assert action in offered


# ------------------------------------------------------------------------------ numbering
def test_each_kind_has_its_own_numbers_per_owner(splatform) -> None:  # type: ignore[no-untyped-def]
    _add_user(splatform, "mall2", Role.OWNER)
    owner, owner2 = splatform.client("mall"), splatform.client("mall2")
    for c in (owner, owner2):
        c.upload("customers", "c.csv", CUST_CSV)
    r = owner.upload("customers", "c.csv", CUST_CSV)
    assert r.headers["location"] == "/owner/uploads/2"
    splatform.run_jobs()
    r = owner.post("/owner/jobs", {"k": "2", "features": ["recency"], "scheme": "ckks"})
    assert r.headers["location"] == "/owner/jobs/1"             # not #4 after 3 imports
    r = owner2.post("/owner/jobs", {"k": "2", "features": ["recency"], "scheme": "ckks"})
    assert r.headers["location"] == "/owner/jobs/1"             # mall2's own first
    assert "Segmentation #1" in owner.get("/owner/jobs/1").text
    assert owner2.get("/owner/uploads/2").status_code == 404      # mall2 uploaded once
    assert owner.api("GET", "/api/v1/uploads/2").json()["id"] == 2
    assert [j["id"] for j in owner.api("GET", "/api/v1/jobs").json()] == [1]
