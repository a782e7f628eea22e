"""Campaigns on the platform (outbox gateway): compose with live preview in the template's
language, one audience definition (draft, minimum size, report), one-click send through the
background worker, holdout, operator approval, statuses that say what happened, waiting
without churn (an injected clock over a night of quiet hours), scheduled sends, test
messages, safe opt-out administration, cancellation with confirmation, erasure, and no full
phone number in any page, log line or database column outside the vault."""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text

from cipherseg.platform.app import make_worker
from cipherseg.platform.campaigns.context import callback_secrets, configure, store_for
from cipherseg.platform.campaigns.settings import CampaignSettings
from cipherseg.platform.demo_data import demo_rows
from cipherseg.platform.models import (
    MESSAGING,
    AuditEvent,
    Customer,
    Job,
    ReleaseGrant,
    Segment,
    SegmentMember,
    User,
)
from cipherseg.platform.numbering import job_scope, next_number

CUSTOMERS, _ = demo_rows(n_customers=130, seed=11)
NO_CONSENT = {"C00003", "C00010"}
CUSTOMERS = [[cid, phone, "no" if cid in NO_CONSENT else "yes", name, tz]
             for cid, phone, _c, name, tz in CUSTOMERS]
TEMPLATE_EN = 'Hi {{ first_name|default("there") }}, {{ segment_name }} night at ' \
              '{{ shop_name }}! {{ opt_out }}'
TEMPLATE_ZH = "{{ first_name }}您好，{{ shop_name }}会员日全场8折。{{ opt_out }}"

CENTROID = {"recency_days": 12.0, "frequency": 6.0, "monetary": 180.0}


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["customer_id", "phone", "consent", "first_name", "timezone"], *rows])
    return buf.getvalue().encode()


def _grant(s, job: Job, owner_id: int) -> None:  # type: ignore[no-untyped-def]
    """Release ``job`` to the merchant ``shop``."""
    s.add(ReleaseGrant(job_id=job.id, granted_by=owner_id, merchant_id=s.scalars(
        select(User.id).where(User.username == "shop")).one()))


def release(platform, **settings: object) -> tuple[int, dict[int, list[int]]]:  # type: ignore[no-untyped-def]
    """Customers imported through the upload pipeline, then a released segmentation with
    segments of 70, 50 and 10 customers (the last below the minimum size).

    Quiet hours are off unless ``settings`` say otherwise (the tests run at any hour)."""
    values: dict[str, object] = {"quiet_hours": "off", "sms_rate": 1000.0,
                                 "campaign_holdout": 0.0}
    values.update(settings)
    configure(platform.ctx, CampaignSettings(**values))  # type: ignore[arg-type]
    owner = platform.client("mall")
    r = owner.upload("customers", "customers.csv", _csv(CUSTOMERS))
    assert r.status_code == 303, r.text
    platform.run_jobs()
    with platform.ctx.sessions() as s:
        ids = list(s.scalars(select(Customer.id).order_by(Customer.external_id)))
        assert len(ids) == len(CUSTOMERS)
        owner_id = s.scalar(select(Customer.owner_id).limit(1))
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id, params={"k": 3},
                  result={"n_customers": len(ids)},
                  number=next_number(s, job_scope("segmentation", owner_id)))
        s.add(job)
        s.flush()
        _grant(s, job, owner_id)
        groups = {0: ids[:70], 1: ids[70:120], 2: ids[120:]}
        for pos, members in groups.items():
            s.add(Segment(job_id=job.id, position=pos, name=("Loyal", "Regular", "Tiny")[pos],
                          size=len(members), centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        return job.id, groups


def _create(shop, job_id: int, segments: dict[int, str], name: str = "Spring",  # type: ignore[no-untyped-def]
            shop_name: str = "Joy Mall", holdout: float | None = None):
    data: dict[str, object] = {"job_id": str(job_id), "name": name, "shop_name": shop_name,
                               "pos": [str(p) for p in segments],
                               "tpl": list(segments.values()),
                               "use": [str(p) for p in segments]}
    if holdout is not None:
        data["holdout_percent"] = str(holdout)
    return shop.post("/merchant/campaigns", data)


def _cid(response) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 303, response.text[:2000]
    url = response.headers["location"].split("?")[0]
    return url, int(url.rsplit("/", 1)[1])


def _mo(platform, number: str, text: str):  # type: ignore[no-untyped-def]
    token = callback_secrets(platform.ctx).mo_token
    return platform.client().tc.get("/gateway/kannel/mo", params={"token": token, "text": text},
                                    headers={"X-Kannel-From": number})


def _phone_forms(national: str) -> list[str]:
    return [national, f"+86{national}", f"{national[:3]} {national[3:7]} {national[7:]}",
            f"{national[:3]}-{national[3:7]}-{national[7:]}"]



def test_merchant_composes_previews_sends_and_sees_the_report(splatform, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    job_id, _ = release(splatform, campaign_holdout=0.1)
    shop = splatform.client("shop")
    # The compose page offers the segments whose audience reaches the minimum size, with
    # the default message in the region's language and no internal segment name in it.
    page = shop.get("/merchant/campaigns/new").text
    assert "Loyal" in page and "Regular" in page and "Tiny" not in page
    assert "68 of 70 customers can be reached" in page    # two without consent
    assert "本周末全场8折" in page and "{{ segment_name }}" not in page.split("<textarea")[1]
    # Live preview: the sample customer and the opt-out line of the template's language.
    r = shop.post("/merchant/campaigns/preview", {"tpl": TEMPLATE_ZH, "segment_name": "Loyal",
                                                 "shop_name": "欢乐城"})
    assert r.status_code == 200
    assert "王芳您好，欢乐城会员日全场8折。回复TD退订" in r.text
    assert "Reply STOP" not in r.text and "Li您好" not in r.text
    assert "138****5678" in r.text and "UCS-2" in r.text and "Chinese" in r.text
    r = shop.post("/merchant/campaigns/preview", {"tpl": TEMPLATE_EN, "segment_name": "Loyal",
                                                 "shop_name": "Joy Mall"})
    assert "Hi Alex, Loyal night at Joy Mall! Reply STOP to opt out" in r.text
    assert "internal name" in r.text                      # warned: segment_name is shown
    r = shop.post("/merchant/campaigns/preview", {"tpl": "{{ phone }} {{ opt_out }}"})
    assert "unknown placeholder {{ phone }}" in r.text.replace("&#34;", '"')

    # One customer of Loyal opted out by SMS before the campaign (via the gateway callback).
    assert _mo(splatform, "+86" + CUSTOMERS[5][1], "退订").status_code == 200
    anon = splatform.client()
    r = anon.tc.get("/gateway/kannel/mo", params={"token": "nope", "text": "STOP"},
                    headers={"X-Kannel-From": "+86" + CUSTOMERS[6][1]})
    assert r.status_code == 403

    detail_url, cid = _cid(_create(shop, job_id, {0: TEMPLATE_EN, 1: TEMPLATE_ZH}))
    page = shop.get(detail_url).text
    # One audience: after consent (2 without, both in Loyal) and the opt-out (1, in Loyal).
    assert 'data-testid="audience-1"><strong>67</strong> of 70' in page
    assert 'data-testid="audience-2"><strong>50</strong> of 50' in page
    assert 'data-testid="send-count">117<' in page and "held out at random" in page

    # Sending needs the confirmation; then it runs in the background worker.
    assert shop.post(detail_url + "/send").status_code == 400
    r = shop.post(detail_url + "/send", {"confirm": "yes"})
    assert r.status_code == 303 and "campaign_starting" in r.headers["location"]
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "campaign")) == 1
    assert shop.post(detail_url + "/send", {"confirm": "yes"}).status_code == 409  # twice
    splatform.run_jobs()
    store = store_for(splatform.ctx)
    assert store.campaign(cid).status == "completed"
    counts = store.state_counts(cid)
    # The report's audience is the draft's: every sendable customer is either held out or
    # got the message; the holdout is about 10 %.
    total = store.report(cid).total
    assert (total.members, total.unreachable, total.audience) == (120, 3, 117)
    assert counts["delivered"] + counts["holdout"] == 117 and 2 <= counts["holdout"] <= 25
    page = shop.get(detail_url).text
    assert 'data-testid="n-audience">117<' in page
    assert f'data-testid="n-delivered">{counts["delivered"]}<' in page and "<polyline" in page
    assert 'data-testid="status-label">completed<' in page
    report = shop.get(detail_url + "/report").text
    assert "2 no consent" in report and "1 opted out" in report
    # The holdout is recorded and reproducible from its seed.
    from cipherseg.messaging.holdout import HoldoutPlan
    plan = HoldoutPlan.from_dict(store.campaign(cid).settings["holdout"])
    with splatform.ctx.engine.connect() as conn:
        m = MESSAGING.messages
        for ref, key, arm in conn.execute(select(m.c.customer_ref, m.c.segment_key, m.c.arm)
                                          .where(m.c.campaign_id == cid, m.c.arm.is_not(None))):
            assert plan.arm(key, ref) == arm

    # Each customer got the message of their segment, in its language, with their name.
    with splatform.ctx.engine.connect() as conn:
        bodies = list(conn.execute(select(MESSAGING.outbox.c.body)).scalars())
    assert len(bodies) == counts["delivered"]
    zh = [b for b in bodies if "会员日" in b]
    assert zh and all(b.endswith("会员日全场8折。回复TD退订") for b in zh)
    assert not any("回复TD退订" in b and "STOP" in b for b in bodies)   # one language each
    assert all(b.endswith("Reply STOP to opt out") for b in bodies if b not in zh)

    # A TD after the campaign counts as "opted out since" in the report.
    with splatform.ctx.engine.connect() as conn:
        m = MESSAGING.messages
        got_one = conn.execute(select(Customer.external_id).join(
            m, m.c.customer_id == Customer.id).where(m.c.campaign_id == cid,
                                                     m.c.state == "delivered")
            .limit(1)).scalar_one()
    delivered_phone = next(row[1] for row in CUSTOMERS if row[0] == got_one)
    assert _mo(splatform, delivered_phone, "TD").status_code == 200
    assert 'data-testid="n-opted-out">1<' in shop.get(detail_url).text

    # The operator sees the campaign and its counts; the audit log has the story.
    sms = splatform.client("sms")
    assert "Spring" in sms.get("/operator/campaigns").text
    assert f'data-testid="n-delivered">{counts["delivered"]}<' in \
        sms.get(f"/operator/campaigns/{cid}").text
    csv_text = shop.get(detail_url + "/report.csv").text
    assert csv_text.startswith("segment,members,unreachable,audience,held out")
    with splatform.ctx.sessions() as s:
        actions = set(s.scalars(select(AuditEvent.action)))
    assert {"campaign_create", "campaign_send", "opt_out", "export"} <= actions

    # No full phone number in any page, log line, or column outside the vault.
    admin = splatform.client("admin")
    for c, url in ((admin, "/admin/audit"), (admin, "/opt-outs"), (sms, "/opt-outs"),
                   (shop, "/merchant/campaigns")):
        c.get(url)
    haystack = "\n".join(p for c in splatform.clients for p in c.pages) + caplog.text
    vault_columns = {("customers", "phone_ct"), ("customers", "first_name_ct")}
    with splatform.ctx.engine.connect() as conn:
        for table in MESSAGING.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for col, value in zip(table.columns, row, strict=True):
                    if (table.name, col.name) not in vault_columns and value is not None:
                        haystack += f"\n{value}"
    flat = re.sub(r"[\s-]", "", haystack)
    leaks = [row[1] for row in CUSTOMERS if row[1] in flat]
    assert leaks == []
    assert "****" in haystack


def test_operator_approval_pause_resume(splatform) -> None:  # type: ignore[no-untyped-def]
    job_id, _ = release(splatform, campaign_approval=True)
    shop = splatform.client("shop")
    detail_url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    r = shop.post(detail_url + "/send", {"confirm": "yes"})
    assert r.status_code == 303 and "campaign_pending" in r.headers["location"]
    splatform.run_jobs()
    store = store_for(splatform.ctx)
    assert store.campaign(cid).status == "pending_approval"
    assert store.state_counts(cid) == {}
    sms = splatform.client("sms")
    page = sms.get("/operator/campaigns").text
    assert "waiting for approval" in page
    assert shop.post(f"/operator/campaigns/{cid}/approve").status_code == 403
    r = sms.post(f"/operator/campaigns/{cid}/approve")
    assert r.status_code == 303
    assert store.campaign(cid).approved_by == "sms"
    splatform.run_jobs()   # queues the audience and sends
    assert store.campaign(cid).status == "completed"
    assert store.state_counts(cid) == {"delivered": 50}
    assert sms.post(f"/operator/campaigns/{cid}/pause").status_code == 409


def test_status_says_what_the_merchant_did_when_approval_is_off(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 3: without approval the status never reads "approved"."""
    job_id, _ = release(splatform)
    shop = splatform.client("shop")
    detail_url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    shop.post(detail_url + "/send", {"confirm": "yes"})
    store = store_for(splatform.ctx)
    assert store.campaign(cid).status == "starting"
    assert store.campaign(cid).approved_by is None
    page = shop.get(detail_url).text
    assert "approved" not in page.lower().replace("approved by", "")
    assert 'data-testid="status-label">starting<' in page


@pytest.mark.parametrize("template, words", [
    # Issue 16 finding 6: the two ways to name {{ opt_out }} without rendering it.
    ("Sale! {% if false %}{{ opt_out }}{% endif %}", "must appear exactly as it is"),
    ("Sale! {{ opt_out|truncate(3, True, '') }}", "must appear exactly as it is"),
    ("Hi {{ customer.phone }} {{ opt_out }}", "attribute access"),
])
def test_bad_templates_are_refused_and_nothing_is_saved(splatform, template: str,  # type: ignore[no-untyped-def]
                                                        words: str) -> None:
    job_id, _ = release(splatform)
    shop = splatform.client("shop")
    r = _create(shop, job_id, {0: template})
    assert r.status_code == 400 and words in r.text.replace("&#34;", '"')
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MESSAGING.campaigns)) == 0


def test_bad_input_is_refused_clearly(splatform) -> None:  # type: ignore[no-untyped-def]
    job_id, _ = release(splatform)
    shop = splatform.client("shop")
    r = _create(shop, job_id, {0: TEMPLATE_EN}, shop_name="  ")
    assert r.status_code == 400 and "shop name" in r.text
    r = _create(shop, job_id, {2: TEMPLATE_EN})      # the tiny segment is not offered
    assert r.status_code == 400 and "not available" in r.text
    r = _create(shop, job_id, {})
    assert r.status_code == 400 and "at least one segment" in r.text
    r = _create(shop, job_id, {0: TEMPLATE_EN}, holdout=80)
    assert r.status_code in (400, 422)
    assert shop.get("/merchant/campaigns/999").status_code == 404
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(MESSAGING.campaigns)) == 0
    # Without {{ opt_out }} the line is appended, never left out.
    _url, cid = _cid(_create(shop, job_id, {0: "Weekend sale at {{ shop_name }}!"}))
    r = shop.post(f"/merchant/campaigns/{cid}/send", {"confirm": "yes"})
    splatform.run_jobs()
    with splatform.ctx.engine.connect() as conn:
        bodies = set(conn.execute(select(MESSAGING.outbox.c.body)).scalars())
    assert bodies == {"Weekend sale at Joy Mall! Reply STOP to opt out"}


def test_minimum_size_applies_to_the_sendable_audience(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 5: a segment with 40 sendable customers does not pass a 50 minimum."""
    job_id, _groups = release(splatform)
    shop = splatform.client("shop")
    draft_url, draft = _cid(_create(shop, job_id, {1: TEMPLATE_EN}, name="Early draft"))
    regular = [row for row in CUSTOMERS[70:120]]
    for row in regular[:10]:                      # 10 of the 50 "Regular" opt out by SMS
        assert _mo(splatform, row[1], "STOP").status_code == 200
    page = shop.get("/merchant/campaigns/new").text
    assert "40 of 50 customers can be reached" in page and "Cannot be targeted" in page
    r = _create(shop, job_id, {1: TEMPLATE_EN})
    assert r.status_code == 400 and "only 40 of its 50 customers can be reached" in r.text
    # The draft saved earlier cannot be sent now either.
    r = shop.post(draft_url + "/send", {"confirm": "yes"})
    assert r.status_code == 409 and "only 40 of its 50" in r.text
    assert store_for(splatform.ctx).campaign(draft).status == "draft"


def test_opt_outs_are_safe_and_say_what_happened(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 6: staff cannot lift a customer's own STOP, every manual change needs a
    reason and is audited, and each message says what actually happened."""
    release(splatform)
    sms = splatform.client("sms")
    number = CUSTOMERS[71][1]
    # Removing a number that was never opted out changes nothing, and says so.
    r = sms.post("/opt-outs", {"phone": number, "kind": "opt_out", "action": "remove",
                               "reason": "customer called"})
    assert r.status_code == 200 and "was not opted out; nothing changed" in r.text
    # A manual entry needs a reason.
    r = sms.post("/opt-outs", {"phone": number, "kind": "suppressed", "action": "add"})
    assert r.status_code == 400 and "reason" in r.text and "nothing changed" in r.text
    r = sms.post("/opt-outs", {"phone": number, "kind": "suppressed", "action": "add",
                               "reason": "complaint ticket 42"})
    assert r.status_code == 200 and "is now suppressed" in r.text and number not in r.text
    r = sms.post("/opt-outs", {"phone": number, "kind": "suppressed", "action": "add",
                               "reason": "again"})
    assert "was already suppressed" in r.text
    assert sms.post("/opt-outs", {"phone": "12345", "reason": "x y z"}).status_code == 400
    # The customer's own STOP: the operator cannot lift it; the customer's START does.
    assert _mo(splatform, "+86" + number, "STOP").status_code == 200
    r = sms.post("/opt-outs", {"phone": number, "kind": "opt_out", "action": "remove",
                               "reason": "merchant wants to reach them"})
    assert r.status_code == 409 and "opted out themselves by SMS" in r.text
    assert "replying START" in r.text and "Nothing changed" in r.text
    key = splatform.ctx.vault.pseudonym("phone", "+86" + number)
    store = store_for(splatform.ctx)
    assert "opt_out" in store.suppression_kinds([key])[key]
    assert _mo(splatform, "+86" + number, "START").status_code == 200
    assert store.suppression_kinds([key]) == {key: {"suppressed"}}
    # A staff opt-out (e.g. asked by phone) can be lifted by staff, with a reason.
    sms.post("/opt-outs", {"phone": number, "kind": "opt_out", "action": "add",
                           "reason": "asked by phone"})
    r = sms.post("/opt-outs", {"phone": number, "kind": "opt_out", "action": "remove",
                               "reason": "entered for the wrong number"})
    assert r.status_code == 200 and "is no longer opted out" in r.text
    with splatform.ctx.sessions() as s:
        events = list(s.scalars(select(AuditEvent).where(AuditEvent.action.in_(
            ["suppression_added", "opt_out_added", "opt_out_removed", "opt_in"]))))
    assert {e.action for e in events} == {"suppression_added", "opt_out_added",
                                          "opt_out_removed", "opt_in"}
    assert all(e.detail and e.detail.get("reason") for e in events if e.action != "opt_in")


def test_cancel_asks_first_and_says_what_happened(splatform) -> None:  # type: ignore[no-untyped-def]
    job_id, _groups = release(splatform)
    shop = splatform.client("shop")
    detail_url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    page = shop.get(detail_url + "/cancel").text
    assert "Cancel \"Spring\"?" in page.replace("&#34;", '"') and "cannot be undone" in page
    r = shop.post(detail_url + "/cancel")                    # no confirmation: asks
    assert r.status_code == 303 and r.headers["location"].endswith("/cancel")
    store = store_for(splatform.ctx)
    assert store.campaign(cid).status == "draft"
    r = shop.post(detail_url + "/cancel", {"confirm": "yes"})
    assert r.status_code == 303 and "campaign_cancelled" in r.headers["location"]
    assert store.campaign(cid).status == "cancelled"
    assert "Cancelled before any message went out" in shop.get(r.headers["location"]).text
    assert shop.post(detail_url + "/cancel", {"confirm": "yes"}).status_code == 409
    # A campaign cancelled after messages went out says so: "partly sent".
    later_url, later = _cid(_create(shop, job_id, {0: TEMPLATE_EN}, name="Later"))
    shop.post(later_url + "/send", {"confirm": "yes"})
    splatform.run_jobs()
    with splatform.ctx.engine.begin() as conn:     # as if 30 were still queued
        m = MESSAGING.messages
        ids = list(conn.execute(select(m.c.id).where(m.c.campaign_id == later)
                                .limit(30)).scalars())
        conn.execute(m.update().where(m.c.id.in_(ids)).values(state="queued"))
        conn.execute(MESSAGING.campaigns.update().where(MESSAGING.campaigns.c.id == later)
                     .values(status="sending"))
    r = shop.post(later_url + "/cancel", {"confirm": "yes"})
    assert "campaign_partly_sent" in r.headers["location"]
    assert store.campaign(later).status == "partly_sent"
    assert 'data-testid="status-label">partly sent<' in shop.get(later_url).text


def test_erasure_removes_messages(splatform) -> None:  # type: ignore[no-untyped-def]
    job_id, groups = release(splatform)
    shop = splatform.client("shop")
    detail_url, _ = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    shop.post(detail_url + "/send", {"confirm": "yes"})
    splatform.run_jobs()
    owner = splatform.client("mall")
    victim = groups[1][0]
    assert owner.post(f"/owner/customers/{victim}/erase", {"confirm": "yes"}).status_code == 303
    with splatform.ctx.engine.connect() as conn:
        m = MESSAGING.messages
        assert conn.execute(select(func.count()).select_from(m)
                            .where(m.c.customer_id == victim)).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM msg_outbox")).scalar_one() == 49


@pytest.mark.parametrize("setting, value", [("quiet_hours", "25:00-08:00"),
                                            ("frequency_cap", "0/7"),
                                            ("sms_gateway", "smpp"),
                                            ("public_base_url", "ftp://x"),
                                            ("public_base_url", "http://h/?a=1"),
                                            ("public_base_url", "https://u:p@h"),
                                            ("sms_opt_out_texts", {"zh": "请访问网站取消"}),
                                            ("sms_opt_out_texts", {"fr": "STOP"}),
                                            ("sms_sender", "JOY MALL"),
                                            ("campaign_holdout", 0.9)])
def test_settings_refuse_nonsense(setting: str, value: object) -> None:
    with pytest.raises(ValueError):
        CampaignSettings(**{setting: value})


class Clock:
    """An injected clock for the worker, the campaign job and the engine."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _clocked_worker(platform, clock: Clock):  # type: ignore[no-untyped-def]
    from cipherseg.platform.campaigns.runner import JOB_KIND, make_campaign_runner
    from cipherseg.platform.jobs import Worker

    return Worker(platform.ctx.sessions, {JOB_KIND: make_campaign_runner(platform.ctx,
                                                                        clock=clock)},
                  threads=1, clock=clock)


def _job_rows(platform) -> list[tuple[int, str, str]]:  # type: ignore[no-untyped-def]
    """Every job row (the customers' import included): id, kind, status."""
    with platform.ctx.sessions() as s:
        return [(j.id, j.kind, j.status) for j in s.scalars(select(Job).order_by(Job.id))]


def test_held_campaigns_sleep_through_quiet_hours_without_new_jobs(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 2: two campaigns held by quiet hours. With an injected clock the night
    passes in 10-minute steps: the jobs table does not change (no continuation jobs), the
    worker claims nothing until 08:00, and then both campaigns go out."""
    from datetime import UTC

    job_id, _ = release(splatform, quiet_hours="21:00-08:00")
    shop = splatform.client("shop")
    clock = Clock(datetime(2026, 5, 4, 17, 5, tzinfo=UTC))        # 01:05 in Shanghai
    worker = _clocked_worker(splatform, clock)
    cids = []
    for pos, name in ((0, "Night A"), (1, "Night B")):
        url, cid = _cid(_create(shop, job_id, {pos: TEMPLATE_EN}, name=name))
        shop.post(url + "/send", {"confirm": "yes"})
        cids.append(cid)
    assert worker.run_one() is not None and worker.run_one() is not None
    store = store_for(splatform.ctx)
    for cid in cids:
        assert store.campaign(cid).status == "sending"
        assert set(store.state_counts(cid)) <= {"queued", "skipped"}   # skipped: no consent
        [(at, reason, _n)] = store.waiting(cid, now=clock.now)
        assert (at, reason) == (datetime(2026, 5, 5, 0, 0, tzinfo=UTC), "quiet hours")
    rows = _job_rows(splatform)
    campaign_jobs = [(i, st) for i, kind, st in rows if kind == "campaign"]
    assert [st for _i, st in campaign_jobs] == ["queued", "queued"]
    with splatform.ctx.sessions() as s:
        stage = s.get(Job, campaign_jobs[1][0]).stage
    assert stage == "waiting: 50 messages will go out at 08:00 Asia/Shanghai (in 6 h 55 min)"
    while clock.now < datetime(2026, 5, 4, 23, 55, tzinfo=UTC):
        clock.now += timedelta(minutes=10)
        assert worker.run_one() is None
        assert _job_rows(splatform) == rows            # not one row more, none changed
    clock.now = datetime(2026, 5, 5, 0, 0, 30, tzinfo=UTC)          # 08:00:30
    assert worker.run_one() == campaign_jobs[0][0]
    assert worker.run_one() == campaign_jobs[1][0]
    for cid in cids:
        assert store.campaign(cid).status == "completed"
    after = _job_rows(splatform)
    assert [(i, kind) for i, kind, _st in after] == [(i, kind) for i, kind, _st in rows]
    assert [st for _i, kind, st in after if kind == "campaign"] == ["done", "done"]


def test_pages_say_when_held_messages_go_out(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 3: the merchant reads how many messages wait and until when."""
    tz = ZoneInfo("Asia/Shanghai")
    now = datetime.now(tz)
    start, end = now - timedelta(hours=1), now + timedelta(hours=2)
    job_id, _ = release(splatform, quiet_hours=f"{start:%H:%M}-{end:%H:%M}")
    shop = splatform.client("shop")
    url, _ = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    r = shop.post(url + "/send", {"confirm": "yes"})
    assert "Sending has started" not in shop.get(r.headers["location"]).text
    splatform.run_jobs()
    page = shop.get(url).text
    assert f"50 messages will go out at {end:%H:%M} Asia/Shanghai (in 1 h 5" in page
    assert f'data-testid="status-label">waiting until {end:%H:%M} Asia/Shanghai<' in page
    assert 'data-testid="n-waiting">50<' in page and "50 in quiet hours" in page
    assert re.search(r"sending job #\d+ \(sleeping until the next messages are due\)", page)
    assert "waiting until" in shop.get("/merchant/campaigns").text


def test_changed_quiet_hours_apply_to_held_messages(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 3: quiet hours switched off (a restart with new settings) release the
    messages already held instead of keeping their old release time."""
    tz = ZoneInfo("Asia/Shanghai")
    now = datetime.now(tz)
    job_id, _ = release(splatform, quiet_hours=f"{now - timedelta(hours=1):%H:%M}-"
                                                f"{now + timedelta(hours=3):%H:%M}")
    shop = splatform.client("shop")
    url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    shop.post(url + "/send", {"confirm": "yes"})
    worker = make_worker(splatform.ctx, threads=1)
    assert len(worker.run_until_empty()) == 1
    store = store_for(splatform.ctx)
    assert store.state_counts(cid) == {"queued": 50}
    assert worker.run_until_empty() == []             # asleep until the hours end
    configure(splatform.ctx, CampaignSettings(quiet_hours="off", sms_rate=1000.0,
                                              campaign_holdout=0.0))
    restarted = make_worker(splatform.ctx, threads=1)  # wakes sleeping campaign jobs
    assert len(restarted.run_until_empty()) == 1
    assert store.state_counts(cid) == {"delivered": 50}
    assert store.campaign(cid).status == "completed"


def test_scheduled_send_starts_at_its_time(splatform) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC

    job_id, _ = release(splatform)
    shop = splatform.client("shop")
    url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    tz = ZoneInfo("Asia/Shanghai")
    at = (datetime.now(tz) + timedelta(days=2)).replace(hour=10, minute=0, second=0,
                                                         microsecond=0)
    r = shop.post(url + "/send", {"confirm": "yes", "when": "later",
                                  "send_date": at.date().isoformat(), "send_time": "10:00"})
    assert "campaign_scheduled" in r.headers["location"]
    store = store_for(splatform.ctx)
    camp = store.campaign(cid)
    assert camp.status == "scheduled" and camp.scheduled_at == at.astimezone(UTC)
    page = shop.get(url).text
    assert f"Starts at {at:%a} {at.day} {at:%b} 10:00 Asia/Shanghai" in page
    splatform.run_jobs()     # a (re)started worker wakes the job; it goes back to sleep
    assert store.campaign(cid).status == "scheduled" and store.state_counts(cid) == {}
    with splatform.ctx.sessions() as s:
        [job] = s.scalars(select(Job).where(Job.kind == "campaign"))
        assert job.status == "queued" and job.not_before == at.astimezone(UTC)
    clock = Clock(at.astimezone(UTC) + timedelta(seconds=5))
    assert _clocked_worker(splatform, clock).run_one() is not None
    assert store.state_counts(cid) == {"delivered": 50}
    r = shop.post(url + "/send", {"confirm": "yes", "when": "later",
                                  "send_date": "2020-01-01", "send_time": "10:00"})
    assert r.status_code == 409


def test_operator_retries_failed_messages_without_duplicates(splatform) -> None:  # type: ignore[no-untyped-def]
    job_id, _ = release(splatform)
    shop = splatform.client("shop")
    url, cid = _cid(_create(shop, job_id, {1: TEMPLATE_EN}))
    shop.post(url + "/send", {"confirm": "yes"})
    splatform.run_jobs()
    store = store_for(splatform.ctx)
    m, o = MESSAGING.messages, MESSAGING.outbox
    with splatform.ctx.engine.begin() as conn:   # the gateway had refused 7 of them
        ids = list(conn.execute(select(m.c.id).where(m.c.campaign_id == cid)
                                .order_by(m.c.id).limit(7)).scalars())
        conn.execute(o.delete().where(o.c.message_id.in_(ids)))
        conn.execute(m.update().where(m.c.id.in_(ids)).values(
            state="failed", reason="refused: Kannel rejected it (400: Sender missing and no "
                                   "global set, rejected)", delivered_at=None))
        conn.execute(MESSAGING.campaigns.update().where(MESSAGING.campaigns.c.id == cid)
                     .values(status="completed_with_failures"))
    page = shop.get(url).text
    assert 'data-testid="status-label">completed with failures<' in page
    assert "7 × refused: Kannel rejected it (400: Sender missing" in page
    sms = splatform.client("sms")
    assert "7 × refused" in sms.get(f"/operator/campaigns/{cid}").text
    assert sms.post(f"/operator/campaigns/{cid}/retry").status_code == 400   # not confirmed
    assert shop.post(f"/operator/campaigns/{cid}/retry", {"confirm": "yes"}).status_code == 403
    r = sms.post(f"/operator/campaigns/{cid}/retry", {"confirm": "yes"})
    assert r.status_code == 303
    assert sms.post(f"/operator/campaigns/{cid}/retry", {"confirm": "yes"}).status_code == 409
    splatform.run_jobs()
    assert store.campaign(cid).status == "completed"
    with splatform.ctx.engine.connect() as conn:
        per_message = conn.execute(select(o.c.message_id, func.count()).group_by(
            o.c.message_id)).all()
        rows = conn.execute(select(func.count()).select_from(m)
                            .where(m.c.campaign_id == cid)).scalar_one()
    assert len(per_message) == 50 and {n for _id, n in per_message} == {1}
    assert rows == 50                                  # same rows, same idempotency keys


def test_test_message_goes_through_the_gateway_and_the_rules(splatform) -> None:  # type: ignore[no-untyped-def]
    release(splatform)
    sms = splatform.client("sms")
    page = sms.get("/operator/campaigns").text
    assert "outbox: messages are recorded in the database" in page
    r = sms.post("/operator/gateway/test", {"phone": "139 1234 5678",
                                            "text": "Test from the operator."})
    assert r.status_code == 200
    assert 'data-testid="test-result">Test to 139****5678: <strong>delivered</strong>' in r.text
    with splatform.ctx.engine.connect() as conn:
        body = conn.execute(select(MESSAGING.outbox.c.body)).scalar_one()
    assert body == "Test from the operator. Reply STOP to opt out"
    assert _mo(splatform, "+8613912345678", "退订").status_code == 200
    r = sms.post("/operator/gateway/test", {"phone": "13912345678", "text": "测试短信"})
    assert "<strong>skipped</strong> — opted out" in r.text
    r = sms.post("/operator/gateway/test", {"phone": "123", "text": "x"})
    assert r.status_code == 400 and "nothing was sent" in r.text
    assert "1391234" not in r.text.replace("139****5678", "")
    # Test messages are not campaigns: not in the lists, no merchant sees them.
    assert "Test message to" not in splatform.client("shop").get("/merchant/campaigns").text
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent)
                        .where(AuditEvent.action == "campaign_gateway_test")) == 2


def test_gateway_check_and_callback_urls_from_the_public_base_url(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.campaigns.gateway_check import gateway_checks, ping_answer

    release(splatform, sms_gateway="kannel", kannel_password="p" * 12)
    checks = {c.name: c for c in gateway_checks(splatform.ctx, probe=False)}
    assert checks["Sender"].ok is False and "Sender missing" in checks["Sender"].detail
    assert checks["Public base URL"].ok is False
    sms = splatform.client("sms")
    page = sms.get("/operator/campaigns").text
    assert "CIPHERSEG_SMS_SENDER is not set" in page
    assert "Set <code>CIPHERSEG_PUBLIC_BASE_URL</code>" in page and ":8000" not in page
    release(splatform, sms_gateway="kannel", kannel_password="p" * 12, sms_sender="JOYMALL",
            public_base_url="https://cs.example.com:8765/")
    page = sms.get("/operator/campaigns").text
    assert "https://cs.example.com:8765/gateway/kannel/dlr" in page
    assert "https://cs.example.com:8765/gateway/kannel/mo?token=" in page
    # The ping proves that a URL leads to this platform (the check's reachability probe).
    r = splatform.client().tc.get("/gateway/kannel/ping", params={"n": "00112233aabbccdd"})
    assert r.status_code == 200 and r.text == ping_answer(splatform.ctx, "00112233aabbccdd")
    assert splatform.client().tc.get("/gateway/kannel/ping",
                                     params={"n": "<script>"}).status_code == 422


def test_lift_merchant_aggregates_owner_detail(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 18 item 9: a holdout per segment, then after the window treated vs holdout from
    the owner's transactions. The merchant sees aggregates of groups of at least the
    minimum size (noisy with ε stated when configured, computed once); the owner the exact
    figures and its own per-customer detail."""
    import random
    from datetime import UTC, date

    from cipherseg.platform import purchases
    from cipherseg.platform.campaigns import lift
    from cipherseg.platform.models import Transaction

    rows, _ = demo_rows(n_customers=640, seed=3)
    rows = [[c, p, "yes", n, tz] for c, p, _c, n, tz in rows]
    configure(splatform.ctx, CampaignSettings(quiet_hours="off", sms_rate=1000.0,
                                              campaign_holdout=0.2))
    owner = splatform.client("mall")
    assert owner.upload("customers", "c.csv", _csv(rows)).status_code == 303
    splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        ids = list(s.scalars(select(Customer.id).order_by(Customer.external_id)))
        owner_id = s.scalar(select(Customer.owner_id).limit(1))
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id, params={"k": 2},
                  result={"n_customers": len(ids)},
                  number=next_number(s, job_scope("segmentation", owner_id)))
        s.add(job)
        s.flush()
        _grant(s, job, owner_id)
        for pos, members in {0: ids[:560], 1: ids[560:]}.items():
            s.add(Segment(job_id=job.id, position=pos, name=("Big", "Small")[pos],
                          size=len(members), centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        job_id = job.id
    shop = splatform.client("shop")
    url, cid = _cid(_create(shop, job_id, {0: TEMPLATE_EN, 1: TEMPLATE_EN}, holdout=20))
    shop.post(url + "/send", {"confirm": "yes"})
    splatform.run_jobs()
    store = store_for(splatform.ctx)
    assert "Measuring: purchases from" in shop.get(url).text
    # Fifteen days later, with purchases planted: 40 % of the treated bought, 20 % of the
    # held-out (a +20 pp effect), each purchase 100.
    start = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
    with splatform.ctx.engine.begin() as conn:
        conn.execute(MESSAGING.campaigns.update().where(MESSAGING.campaigns.c.id == cid)
                     .values(started_at=start))
        arms = conn.execute(select(MESSAGING.messages.c.customer_id, MESSAGING.messages.c.arm)
                            .where(MESSAGING.messages.c.campaign_id == cid)).all()
    draw = random.Random(7)
    with splatform.ctx.sessions() as s:
        for i, (customer, arm) in enumerate(arms):
            if draw.random() < (0.4 if arm == "treated" else 0.2):
                s.add(Transaction(owner_id=owner_id, customer_id=customer,
                                  external_id=f"L{i}", row_digest="x",
                                  payload_ct=purchases.seal(splatform.ctx.vault, owner_id,
                                                            f"L{i}", date(2026, 3, 5), 100,
                                                            "food")))
        s.commit()
    camp = store.campaign(cid)
    report = lift.owner_report(splatform.ctx, camp)
    assert report.state == "ready" and report.window_start == date(2026, 3, 1)
    big = next(s for s in report.segments if s.name == "Big")
    assert big.holdout >= 50 and big.result is not None
    assert big.result.conversion_lift.covers(0.2) and big.result.conversion_lift.low > 0
    assert abs(big.result.spend_lift.estimate - 100 * big.result.conversion_lift.estimate) < 1e-6
    # The merchant: the small segment's holdout (~16) is below the minimum size: withheld.
    page = shop.get(url).text
    assert 'data-testid="lift-chart"' in page and "Big" in page
    assert "fewer than 50 customers in a group" in page
    assert "pseudonym" not in page and 'data-testid="lift-detail"' not in page
    # With differential privacy on, the merchant's release is noisy, states ε, is kept.
    with splatform.ctx.engine.begin() as conn:
        conn.execute(MESSAGING.campaigns.update().where(MESSAGING.campaigns.c.id == cid)
                     .values(settings={**camp.settings}))          # drop the first release
    configure(splatform.ctx, CampaignSettings(quiet_hours="off", campaign_holdout=0.2,
                                              lift_epsilon=1.0, lift_spend_cap=500))
    first = lift.merchant_report(splatform.ctx, store.campaign(cid))
    again = lift.merchant_report(splatform.ctx, store.campaign(cid))
    assert first.epsilon == 1.0 and first.segments == again.segments
    noisy = next(s for s in first.segments if s.name == "Big").result
    assert noisy is not None and noisy.treated.converters != big.result.treated.converters
    assert "ε = 1.0" in shop.get(url).text
    # The owner sees the exact figures and can export its own detail (audited).
    page = owner.get(f"/owner/campaigns/{cid}").text
    assert f"{big.result.conversion_treated * 100:.1f} %" in page and "ε =" not in page
    detail = owner.get(f"/owner/campaigns/{cid}/lift.csv")
    lines = detail.text.strip().splitlines()
    assert lines[0] == "pseudonym,segment,group,purchases,spend"
    assert len(lines) - 1 == sum(1 for _c, arm in arms if arm is not None)
    assert shop.get(f"/owner/campaigns/{cid}/lift.csv").status_code == 403
    assert owner.get("/owner/campaigns").status_code == 200 and "Spring" in \
        owner.get("/owner/campaigns").text


def test_a_joint_segment_is_targeted_through_each_owners_records(splatform) -> None:  # type: ignore[no-untyped-def]
    """Issue 17: a joint segmentation's segments are released, targeted and sent like a
    single owner's; each owner's customers go through that owner's consent record, opt-outs
    and the frequency cap apply per number; each owner measures only its own customers; the
    operator's audiences and the centre's schedule list the joint job."""
    from cipherseg.platform.campaigns import lift
    from cipherseg.platform.models import Role

    from ..conftest import _HASH

    configure(splatform.ctx, CampaignSettings(quiet_hours="off", sms_rate=1000.0,
                                              campaign_holdout=0.2))
    with splatform.ctx.sessions() as s:
        s.add(User(username="mall2", password_hash=_HASH[0], role=Role.OWNER.value,
                   active=True))
        s.commit()
    rows2, _ = demo_rows(n_customers=60, seed=23)
    rows2 = [[c, p, "no" if c == "C00004" else "yes", n, tz] for c, p, _c, n, tz in rows2]
    for name, rows in (("mall", CUSTOMERS[:70]), ("mall2", rows2)):
        assert splatform.client(name).upload("customers", "c.csv", _csv(rows)).status_code \
            == 303
        splatform.run_jobs()
    with splatform.ctx.sessions() as s:
        owners = dict(s.execute(select(User.username, User.id)).all())
        by_owner = {n: list(s.scalars(select(Customer.id).where(
            Customer.owner_id == owners[n]).order_by(Customer.external_id)))
            for n in ("mall", "mall2")}
        job = Job(kind="joint", status="done", progress=1.0, stage="done",
                  owner_id=owners["mall"], created_by=owners["mall"],
                  params={"k": 2, "participants": [owners["mall"], owners["mall2"]],
                          "accepted": [owners["mall"], owners["mall2"]]},
                  result={"n_customers": 130, "n_iter": 4},
                  number=next_number(s, job_scope("joint", owners["mall"])))
        s.add(job)
        s.flush()
        _grant(s, job, owners["mall"])
        groups = {0: by_owner["mall"][:60] + by_owner["mall2"][:55],
                  1: by_owner["mall"][60:] + by_owner["mall2"][55:]}
        for pos, members in groups.items():
            s.add(Segment(job_id=job.id, position=pos, name=("loyal customers", "lost")[pos],
                          size=len(members), centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        job_id = job.id
    # one of mall2's customers opted out by SMS
    opted = rows2[10][1]
    assert _mo(splatform, "+86" + opted, "STOP").status_code == 200
    shop = splatform.client("shop")
    page = shop.get("/merchant/campaigns/new").text
    assert "mall, mall2 (joint)" in page and "loyal customers" in page
    url, cid = _cid(_create(shop, job_id, {0: TEMPLATE_EN}))
    page = shop.get(url).text
    no_consent = sum(1 for c, *_ in CUSTOMERS[:60] if c in NO_CONSENT)
    reachable = 115 - no_consent - 1 - 1     # mall's no-consent, mall2's C00004, the STOP
    assert f'data-testid="audience-1"><strong>{reachable}</strong> of 115' in page
    assert shop.post(url + "/send", {"confirm": "yes"}).status_code == 303
    splatform.run_jobs()
    store = store_for(splatform.ctx)
    counts = store.state_counts(cid)
    assert counts["delivered"] + counts["holdout"] == reachable
    with splatform.ctx.engine.connect() as conn:
        m = MESSAGING.messages
        sent_to = dict(conn.execute(select(Customer.external_id, Customer.owner_id).join(
            m, m.c.customer_id == Customer.id).where(
            m.c.campaign_id == cid, m.c.state.in_(["delivered", "holdout"]))).all())
        states = dict(conn.execute(select(Customer.external_id, m.c.state).join(
            m, m.c.customer_id == Customer.id).where(
            m.c.campaign_id == cid, Customer.owner_id == owners["mall2"])).all())
    assert set(sent_to.values()) == {owners["mall"], owners["mall2"]}
    assert states["C00004"] == "skipped"
    assert states[rows2[10][0]] == "skipped"
    # both owners see the campaign; each measures (and exports) only its own customers
    for name in ("mall", "mall2"):
        assert f"/owner/campaigns/{cid}" in splatform.client(name).get("/owner/campaigns").text
    camp = store.campaign(cid)
    with splatform.ctx.engine.begin() as conn:
        conn.execute(MESSAGING.campaigns.update().where(MESSAGING.campaigns.c.id == cid)
                     .values(started_at=datetime(2026, 3, 1, 4, 0, tzinfo=ZoneInfo("UTC"))))
    camp = store.campaign(cid)
    start, end = lift.window(splatform.ctx, camp) or (None, None)
    assert start is not None and end is not None
    for name in ("mall", "mall2"):
        spend = lift.spend_by_customer(splatform.ctx, camp, start, end,
                                       owner_id=owners[name])
        seen = {c for v in spend.values() for c in v}
        assert seen and seen <= set(by_owner[name])
    lift_csv = splatform.client("mall2").get(f"/owner/campaigns/{cid}/lift.csv").text
    with splatform.ctx.sessions() as s:
        pseudonyms = set(s.scalars(select(Customer.pseudonym).where(
            Customer.owner_id == owners["mall2"])))
    lines = lift_csv.strip().splitlines()[1:]
    assert lines and all(line.split(",")[0] in pseudonyms for line in lines)
    # the operator's audiences and the centre's schedule list the joint segmentation
    assert "mall, mall2 (joint)" in splatform.client("sms").get("/operator/audiences").text
    schedule = splatform.client("centre").get("/centre/jobs").text
    assert "joint (2 owners on this platform)" in schedule
