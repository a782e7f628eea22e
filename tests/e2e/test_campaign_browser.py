"""A merchant writes a template, previews it, sends the campaign with one click and watches
the delivery chart — in Debian's chromium (Playwright) against ``cipherseg serve``, with the
messages going through a real Kannel (bearerbox + smsbox + fake SMSC on loopback), delivery
reports and an inbound "STOP" coming back to the platform over HTTP.

Afterwards: every consenting customer of the chosen segments got exactly one message, no
page showed a console error, and no page, server log line or database column outside the
vault holds a full phone number.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cipherseg.platform.campaigns.settings import CallbackSecrets
from cipherseg.platform.demo_data import demo_rows
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness, kannel_installed
from cipherseg.testing.ports import free_port
from e2e.browser_support import CHROMIUM, LAUNCH_ARGS, SHOTS, prepare_release, run_cli, serve

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORDS = {"mall": "owner passphrase 1", "shop": "merchant passphrase 1",
             "sms": "operator passphrase 1"}
CUSTOMERS, _ = demo_rows(n_customers=110, seed=5)
NO_CONSENT = {"C00004"}
CUSTOMERS = [[cid, phone, "no" if cid in NO_CONSENT else "yes", name, tz]
             for cid, phone, _c, name, tz in CUSTOMERS]
TEMPLATE = ("{{ first_name }}您好！{{ shop_name }}{{ segment_name }}会员周末全场8折。"
            "{{ opt_out }}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    """Kannel + the platform (``cipherseg serve`` with the Kannel gateway) + a handset."""
    if not os.access(CHROMIUM, os.X_OK) or not kannel_installed():
        pytest.fail("chromium or Kannel missing: run `bash scripts/system-deps.sh`")
    data = tmp_path_factory.mktemp("campaign-e2e")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key = secrets.token_urlsafe(32)
    token = CallbackSecrets(key.encode()).mo_token
    harness = KannelHarness(data / "kannel", mo_url=f"{base}/gateway/kannel/mo?token={token}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    env.update({
        "CIPHERSEG_DATA_DIR": str(data / "platform"), "CIPHERSEG_WORKER_THREADS": "1",
        "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1",
        "CIPHERSEG_SMS_GATEWAY": "kannel", "CIPHERSEG_SMS_RATE": "200",
        "CIPHERSEG_SMS_SENDER": "JOYMALL", "CIPHERSEG_QUIET_HOURS": "off",
        "CIPHERSEG_CAMPAIGN_HOLDOUT": "0",
        "CIPHERSEG_KANNEL_SENDSMS_URL": harness.sendsms_url,
        "CIPHERSEG_KANNEL_USERNAME": harness.username,
        "CIPHERSEG_KANNEL_PASSWORD": harness.password,
        "CIPHERSEG_PUBLIC_BASE_URL": base, "CIPHERSEG_SMS_CALLBACK_KEY": key,
        "CIPHERSEG_SMS_REPORT_WAIT_SECONDS": "1"})
    run_cli(env, "db", "upgrade")
    for name, role in (("mall", "owner"), ("shop", "merchant"), ("sms", "operator")):
        run_cli(env, "users", "create", name, "--role", role, stdin=PASSWORDS[name] + "\n")
    groups = prepare_release(env, CUSTOMERS, [("Gold", 60), ("Silver", 50)])
    harness.start()
    phone = FakeSmscClient(harness.ports.smsc).connect()
    harness.wait_smsc_online()
    log_path = data / "server.log"
    try:
        with serve(env, log_path, port=port):
            yield {"base": base, "log": log_path, "db": data / "platform" / "cipherseg.db",
                   "phone": phone, "groups": groups, "harness": harness}
    finally:
        phone.close()
        harness.stop()


def test_merchant_writes_previews_sends_and_sees_the_chart(stack) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    base = str(stack["base"])
    phone: FakeSmscClient = stack["phone"]  # type: ignore[assignment]
    pages: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def shot(name: str) -> None:
            pages.append(page.content())
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

        page.goto(base + "/login")
        page.fill("input[name=username]", "shop")
        page.fill("input[name=password]", PASSWORDS["shop"])
        page.click("button[type=submit]")
        page.wait_for_load_state()
        assert "/login" not in page.url, page.content()
        assert "Campaigns" in page.content(), (page.url, page.content()[:3000])
        page.click("nav >> text=Campaigns")
        page.click("text=New campaign")
        page.fill("input[name=name]", "Weekend sale")
        page.fill("input[name=shop_name]", "欢乐城")
        # Write the template for "Gold" and watch the live preview follow.
        page.fill("#tpl-0", TEMPLATE)
        sample = "王芳您好！欢乐城Gold会员周末全场8折。回复TD退订"
        page.locator("#preview-0 [data-testid=preview-text]").filter(
            has_text=sample).wait_for(timeout=10_000)
        counts = page.inner_text("#preview-0 [data-testid=preview-counts]")
        assert "UCS-2" in counts and "1 SMS part" in counts, counts
        assert f"{len(sample)} characters" in counts, counts
        assert "138****5678" in page.inner_text("#preview-0")
        # A typo in a placeholder is caught before anything is saved.
        page.fill("#tpl-1", "{{ frist_name }} {{ opt_out }}")
        page.wait_for_selector("#preview-1 [data-testid=preview-error]")
        assert "unknown placeholder {{ frist_name }}" in page.inner_text("#preview-1")
        page.uncheck("input[name=use][value='1']")
        shot("20-campaign-compose")
        page.click("text=Save campaign")
        page.wait_for_selector("[data-testid=send]")
        audience = page.inner_text("[data-testid=audience-1]")
        assert audience.startswith("59 of 60 can be reached"), audience  # one: no consent
        shot("21-campaign-draft")
        page.check("[data-testid=confirm]")
        page.click("[data-testid=send]")
        page.wait_for_selector("text=The campaign is queued for sending")
        # The report refreshes itself (htmx) until every delivery report is in.
        page.locator("[data-testid=n-delivered]").filter(has_text="59").wait_for(
            timeout=60_000)
        page.wait_for_selector("[data-testid=chart] svg polyline")
        shot("22-campaign-delivered")
        url = page.url.split("?")[0]

        # A customer answers STOP from their phone: Kannel → platform → opted out.
        gold = stack["groups"][0]  # type: ignore[index]
        by_id = {row[0]: row[1] for row in CUSTOMERS}
        phone.send_mo("+86" + by_id[gold[0]], "10086", "STOP")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            page.goto(url)
            if page.inner_text("[data-testid=n-opted-out]").strip() == "1":
                break
            time.sleep(0.5)
        assert page.inner_text("[data-testid=n-opted-out]").strip() == "1"
        shot("23-campaign-report")
        browser.close()

    # Exactly one message per consenting Gold customer reached a phone.
    got = phone.wait_for(59, timeout=10)
    per_number = Counter(m.receiver for m in got)
    expected = {"+86" + by_id[c] for c in gold if c not in NO_CONSENT}
    assert per_number == Counter(dict.fromkeys(expected, 1))
    assert all(m.kind == "ucs-2" and m.text.endswith("会员周末全场8折。回复TD退订") for m in got)
    assert errors == [], errors

    # No full number in any page, the server log, or a database column outside the vault.
    haystack = "\n".join(pages) + Path(str(stack["log"])).read_text()
    with sqlite3.connect(str(stack["db"])) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type='table'")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for col, value in zip(cols, row, strict=True):
                    if (table, col) in {("customers", "phone_ct"),
                                        ("customers", "first_name_ct")} or value is None:
                        continue
                    haystack += "\n" + (value.hex() if isinstance(value, bytes) else str(value))
    flat = re.sub(r"[\s-]", "", haystack)
    assert [row[1] for row in CUSTOMERS if row[1] in flat] == []
    assert "****" in haystack
