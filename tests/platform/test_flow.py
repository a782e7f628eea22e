"""The main flow on SQLite, PostgreSQL and MariaDB: upload, re-upload, segment, release,
merchant view, erasure, audit — and no unmasked phone number in any page, export or log."""

from __future__ import annotations

import csv
import io
import logging
import re

import pytest
from sqlalchemy import func, select, text

from cipherseg.platform.demo_data import demo_rows
from cipherseg.platform.models import (
    AppendOnlyError,
    AuditEvent,
    Customer,
    Job,
    Segment,
    SegmentMember,
    Transaction,
)
from cipherseg.platform.services.customers import customer_tables


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


CUSTOMERS, TRANSACTIONS = demo_rows(n_customers=240, seed=3)
CUST_CSV = _csv(["customer_id", "phone", "consent", "first_name", "timezone"], CUSTOMERS)
TX_CSV = _csv(["transaction_id", "customer_id", "date", "amount", "category"], TRANSACTIONS)


def _phone_forms(national: str) -> list[str]:
    """Ways a number could leak: as uploaded, E.164, spaced, dashed, with 86 prefix."""
    return [national, f"+86{national}", f"86{national}", f"{national[:3]} {national[3:7]} "
            f"{national[7:]}", f"{national[:3]}-{national[3:7]}-{national[7:]}"]


def _count(platform, model) -> int:  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model)))


def test_platform_on_every_database(platform, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    owner = platform.client("mall")
    # 1. customers, transactions, and the same files again (idempotent)
    for kind, body in (("customers", CUST_CSV), ("transactions", TX_CSV),
                       ("customers", CUST_CSV), ("transactions", TX_CSV)):
        r = owner.upload(kind, f"{kind}.csv", body)
        assert r.status_code == 303, r.text
        platform.run_jobs()
        page = owner.get(r.headers["location"]).text
        assert 'id="upload-status">imported' in page, page
    assert _count(platform, Customer) == len(CUSTOMERS)
    assert _count(platform, Transaction) == len(TRANSACTIONS)
    assert f"0 new, 0 updated, {len(TRANSACTIONS)} unchanged" in page

    # 2. a segmentation job runs in the worker, not in the request
    r = owner.post("/owner/jobs", {"k": "4", "features": ["recency", "frequency", "monetary"],
                                   "scheme": "ckks"})
    assert r.status_code == 303
    job_url = r.headers["location"]
    assert "queued" in owner.get(job_url).text
    assert owner.get(job_url + "/progress").status_code == 200
    platform.run_jobs()
    job_page = owner.get(job_url).text
    assert 'id="job-status">done' in job_page, job_page
    with platform.ctx.sessions() as s:
        job = s.scalars(select(Job).where(Job.kind == "segmentation")).one()
        segs = list(s.scalars(select(Segment).where(Segment.job_id == job.id)))
        assert sum(x.size for x in segs) == job.result["n_customers"] == len(CUSTOMERS)
        assert s.scalar(select(func.count()).select_from(SegmentMember)) == len(CUSTOMERS)
        assert all(set(x.centroid) == {"recency_days", "frequency", "monetary"} for x in segs)

    # 3. merchants see nothing before release, then only segments >= the minimum size
    shop = platform.client("shop")
    assert "No segmentation has been released to you yet" in shop.get("/merchant/segments").text
    assert job_url == "/owner/jobs/1"  # the owner's first segmentation, after 4 uploads
    r = owner.post(job_url + "/publish", {"merchants": ["shop"]})
    assert r.status_code == 303
    releases = shop.api("GET", "/api/v1/releases").json()
    shown = releases[0]["segments"]
    min_size = platform.ctx.settings.min_segment_size
    for seg in shown:
        assert seg["size"] is None or seg["size"] >= min_size
        if seg["name"] == "other":
            assert seg["profile"] is None
    big = sorted(x.size for x in segs if x.size >= min_size)
    assert sorted(x["size"] for x in shown if x["name"] != "other") == big
    merchant_page = shop.get("/merchant/segments").text
    assert all(c[0] not in merchant_page for c in CUSTOMERS[:50])  # no customer ids
    sms = platform.client("sms")
    audiences = sms.api("GET", "/api/v1/audiences").json()
    assert audiences[0]["merchants"] == ["shop"]
    assert all(seg["profile"] is None for seg in audiences[0]["segments"])

    # 4. owner exports labels per pseudonym; the export is audited
    labels = owner.get(job_url + "/labels.csv").text.splitlines()
    assert labels[0] == "pseudonym,segment,segment_name" and len(labels) == len(CUSTOMERS) + 1
    assert all(re.fullmatch(r"[0-9a-f]{32},\d+,.+", line) for line in labels[1:])

    # 5. erasure removes the customer's PII and every row about them
    with platform.ctx.sessions() as s:
        victim = s.scalars(select(Customer).where(Customer.external_id == "C00007")).one()
    r = owner.post(f"/owner/customers/{victim.id}/erase", {"confirm": "yes"})
    assert r.status_code == 303
    with platform.ctx.sessions() as s:
        assert s.get(Customer, victim.id) is None
        for table, column in customer_tables():
            n = s.scalar(select(func.count()).select_from(table).where(column == victim.id))
            assert n == 0, table.name
    assert _count(platform, Customer) == len(CUSTOMERS) - 1

    # 6. the audit log has every security-relevant action; admin page and CSV export
    admin = platform.client("admin")
    assert admin.get("/admin/audit").status_code == 200
    audit_csv = admin.get("/admin/audit.csv").text
    for action in ("login", "upload", "upload_imported", "job_start", "job_finish",
                   "release_grant", "result_view", "export", "erasure"):
        assert f",{action}," in audit_csv, action

    # 7. a file with one bad row imports nothing; the audit log refuses changes
    _check_bad_upload_imports_nothing(platform, owner)
    _check_audit_log_is_append_only(platform)

    # 8. no unmasked phone number anywhere: pages, API, exports, logs, audit
    for c in (owner, shop, sms, admin):
        for url in ("/owner/customers", "/owner/data", "/owner/customers?offset=50",
                    "/api/v1/customers?limit=1000", "/merchant/segments",
                    "/operator/audiences", "/admin/audit", job_url):
            c.get(url)
    haystack = "\n".join(p for c in (owner, shop, sms, admin) for p in c.pages)
    haystack += "\n" + caplog.text + "\n" + audit_csv
    assert "****" in haystack  # masked numbers are shown
    for row in CUSTOMERS:
        for form in _phone_forms(row[1]):
            assert form not in haystack, f"phone number leaked: {form}"


def _check_audit_log_is_append_only(platform) -> None:  # type: ignore[no-untyped-def]
    with platform.ctx.sessions() as s:
        event = s.scalars(select(AuditEvent)).first()
        event.action = "tampered"
        with pytest.raises(AppendOnlyError):
            s.flush()
        s.rollback()
        s.delete(s.scalars(select(AuditEvent)).first())
        with pytest.raises(AppendOnlyError):
            s.flush()
        s.rollback()
        from sqlalchemy import delete, update

        with pytest.raises(AppendOnlyError):
            s.execute(update(AuditEvent).values(action="x"))
        with pytest.raises(AppendOnlyError):
            s.execute(delete(AuditEvent))
    # raw SQL bypasses the ORM: the database trigger refuses it
    for stmt in ("UPDATE audit_events SET action = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(Exception, match="append-only"), platform.ctx.engine.begin() as conn:
            conn.execute(text(stmt))
    assert _count(platform, AuditEvent) >= 1


def _check_bad_upload_imports_nothing(platform, owner) -> None:  # type: ignore[no-untyped-def]
    before = _count(platform, Customer)
    rows = [[f"N{i:04d}", *r[1:]] for i, r in enumerate(CUSTOMERS[:60])]
    rows[59][1] = "not a phone"
    r = owner.upload("customers", "c.csv", _csv(["customer_id", "phone", "consent",
                                                  "first_name", "timezone"], rows))
    platform.run_jobs()
    assert "1 of 60 rows have problems" in owner.get(r.headers["location"]).text
    assert _count(platform, Customer) == before
