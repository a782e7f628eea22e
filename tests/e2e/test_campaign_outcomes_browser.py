"""Campaigns that tell the truth, through a real Kannel, in Debian's chromium (issue 18).

The platform (``cipherseg serve``) sends through Kannel (bearerbox + smsbox + fake SMSC on
loopback); a Python client of the fake SMSC plays the phones. The server is restarted with
other settings between acts, as an operator would after fixing the configuration:

1. **No sender configured** — the operator's gateway check says so; the merchant's Chinese
   campaign ends "failed", and both merchant and operator read Kannel's reason
   ("Sender missing and no global set").
2. **Sender set, server restarted** — the operator retries the failed messages: every
   customer gets exactly one message, in Chinese with the Chinese opt-out line (回复TD退订)
   and no English; a test message goes through the same gateway.
3. **A customer's STOP** — sent from a phone through Kannel; the operator cannot lift it.
4. **Quiet hours** — a campaign sent inside them says how many messages go out when; the
   merchant cancels it after a confirmation page.

Screenshots go to ``artefacts/screenshots/3x-*.png`` (the docs use some of them).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cipherseg.platform.campaigns.settings import CallbackSecrets
from cipherseg.platform.demo_data import demo_rows
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness, kannel_installed
from cipherseg.testing.ports import free_port
from cipherseg.testing.server import wait_healthy
from e2e.browser_support import CHROMIUM, CLI, LAUNCH_ARGS, SHOTS, prepare_release, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORDS = {"mall": "owner passphrase 1", "shop": "merchant passphrase 1",
             "sms": "operator passphrase 1"}
CHINESE_NAMES = ["王芳", "李娜", "张伟", "刘洋", "陈静", ""]
CUSTOMERS, _ = demo_rows(n_customers=120, seed=9)
CUSTOMERS = [[cid, phone, "yes", CHINESE_NAMES[i % len(CHINESE_NAMES)], tz]
             for i, (cid, phone, _c, _n, tz) in enumerate(CUSTOMERS)]


class Stack:
    """Kannel, a phone, and ``cipherseg serve`` that can be restarted with new settings."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        key = secrets.token_urlsafe(32)
        token = CallbackSecrets(key.encode()).mo_token
        self.harness = KannelHarness(data / "kannel",
                                     mo_url=f"{self.base}/gateway/kannel/mo?token={token}")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
        self.env.update({
            "CIPHERSEG_DATA_DIR": str(data / "platform"), "CIPHERSEG_WORKER_THREADS": "1",
            "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1",
            "CIPHERSEG_SMS_GATEWAY": "kannel", "CIPHERSEG_SMS_RATE": "200",
            "CIPHERSEG_QUIET_HOURS": "off", "CIPHERSEG_CAMPAIGN_HOLDOUT": "0.2",
            "CIPHERSEG_KANNEL_SENDSMS_URL": self.harness.sendsms_url,
            "CIPHERSEG_KANNEL_USERNAME": self.harness.username,
            "CIPHERSEG_KANNEL_PASSWORD": self.harness.password,
            "CIPHERSEG_PUBLIC_BASE_URL": self.base, "CIPHERSEG_SMS_CALLBACK_KEY": key,
            "CIPHERSEG_SMS_REPORT_WAIT_SECONDS": "1"})
        self.log_path = data / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.phone: FakeSmscClient | None = None

    def start_kannel(self) -> None:
        self.harness.start()
        self.phone = FakeSmscClient(self.harness.ports.smsc).connect()
        self.harness.wait_smsc_online()

    def serve(self, **settings: str) -> None:
        """(Re)start the server with these ``CIPHERSEG_`` settings on top of the base."""
        self.stop_server()
        env = dict(self.env)
        for name, value in settings.items():
            if value is None:
                env.pop(f"CIPHERSEG_{name.upper()}", None)
            else:
                env[f"CIPHERSEG_{name.upper()}"] = value
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([CLI, "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port)], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_healthy(self.base, self.proc, seconds=30)
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{self.log_path.read_text()}")

    def stop_server(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.stop_server()
        if self.phone is not None:
            self.phone.close()
        self.harness.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not os.access(CHROMIUM, os.X_OK) or not kannel_installed():
        pytest.fail("chromium or Kannel missing: run `bash scripts/system-deps.sh`")
    st = Stack(tmp_path_factory.mktemp("campaign-outcomes"))
    run_cli(st.env, "db", "upgrade")
    for name, role in (("mall", "owner"), ("shop", "merchant"), ("sms", "operator")):
        run_cli(st.env, "users", "create", name, "--role", role, stdin=PASSWORDS[name] + "\n")
    st.groups = prepare_release(st.env, CUSTOMERS, [("Gold", 60), ("Silver", 60)])  # type: ignore[attr-defined]
    try:
        st.start_kannel()
        yield st
    finally:
        st.close()


def _plant_purchases(stack: Stack, campaign_id: int) -> None:
    """Move the campaign's start 15 days back and give its customers purchases: half of
    those who got the message bought, a fifth of those held out."""
    import random
    from datetime import UTC, date

    from sqlalchemy import select

    from cipherseg.platform import purchases
    from cipherseg.platform.app import make_context
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.models import MESSAGING, Transaction, User

    ctx = make_context(Settings(data_dir=Path(stack.env["CIPHERSEG_DATA_DIR"])))
    start = datetime.now(UTC) - timedelta(days=15)
    m, c = MESSAGING.messages, MESSAGING.campaigns
    with ctx.engine.begin() as conn:
        conn.execute(c.update().where(c.c.id == campaign_id).values(started_at=start))
        arms = conn.execute(select(m.c.customer_id, m.c.arm).where(
            m.c.campaign_id == campaign_id, m.c.arm.is_not(None))).all()
    draw = random.Random(4)
    day = (start + timedelta(days=3)).date()
    with ctx.sessions() as s:
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        for i, (customer, arm) in enumerate(arms):
            if draw.random() < (0.5 if arm == "treated" else 0.2):
                s.add(Transaction(owner_id=owner_id, customer_id=customer,
                                  external_id=f"LIFT{i}", row_digest="planted",
                                  payload_ct=purchases.seal(
                                      ctx.vault, owner_id, f"LIFT{i}",
                                      date.fromordinal(day.toordinal()), 88, "food")))
        s.commit()
    ctx.engine.dispose()


class Browser:
    """One chromium, a page per role, screenshots, and every page's HTML kept."""

    def __init__(self, playwright: Any, base: str) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                  args=LAUNCH_ARGS)
        self.base = base
        self.pages: list[str] = []
        self.errors: list[str] = []
        self.tabs: dict[str, Any] = {}

    def as_(self, user: str) -> Any:
        if user not in self.tabs:
            ctx = self.browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                    else None)
            page.on("pageerror", lambda e: self.errors.append(str(e)))
            page.goto(self.base + "/login")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", PASSWORDS[user])
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert "/login" not in page.url, page.content()[:2000]
            self.tabs[user] = page
        return self.tabs[user]

    def shot(self, page: Any, name: str) -> None:
        self.pages.append(page.content())
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.browser.close()


def _compose(page: Any, base: str, name: str, position: int) -> str:
    """Write and save a campaign for one segment with the default (Chinese) message."""
    page.goto(base + "/merchant/campaigns/new")
    page.fill("input[name=name]", name)
    page.fill("input[name=shop_name]", "欢乐城")
    for box in page.locator("input[name=use]").all():
        if box.get_attribute("value") == str(position):
            box.check()
        else:
            box.uncheck()
    preview = page.locator(f"#preview-{position} [data-testid=preview-text]")
    preview.filter(has_text="欢乐城本周末全场8折").wait_for(timeout=10_000)
    page.click("text=Save campaign")
    page.wait_for_selector("[data-testid=send]")
    return str(page.url.split("?")[0])


def _wait_text(page: Any, url: str, selector: str, pattern: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        page.goto(url)
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{selector} never matched {pattern!r}; last: {text!r}")


def test_campaigns_tell_the_truth_through_kannel(stack: Stack) -> None:
    from playwright.sync_api import sync_playwright

    phone = stack.phone
    assert phone is not None
    by_id = {row[0]: row[1] for row in CUSTOMERS}
    gold = stack.groups[0]  # type: ignore[attr-defined]
    stack.serve(sms_sender=None)
    with sync_playwright() as p:
        b = Browser(p, stack.base)
        try:
            # --- 1. no sender: the check says so, the campaign fails with Kannel's reason
            op = b.as_("sms")
            op.goto(stack.base + "/operator/campaigns")
            checks = op.inner_text("[data-testid=gateway-checks]")
            assert op.locator("[data-testid=gateway-checks] li.bad").count() == 1
            assert "Sender: CIPHERSEG_SMS_SENDER is not set" in checks, checks
            assert "Kannel reachable: smsbox at" in checks, checks
            assert "Callback URL reachable: " + stack.base in checks, checks
            assert op.inner_text("[data-testid=dlr-url]") == \
                f"{stack.base}/gateway/kannel/dlr"
            b.shot(op, "30-operator-gateway-check")

            shop = b.as_("shop")
            url = _compose(shop, stack.base, "周末特卖", 0)
            sample = shop.inner_text("[data-testid=preview-text]")
            assert sample == "王芳您好！欢乐城本周末全场8折，欢迎光临。回复TD退订", sample
            assert "Chinese" in shop.inner_text("[data-testid=preview-language]")
            count = int(shop.inner_text("[data-testid=send-count]"))
            assert count == 60
            shop.check("[data-testid=confirm]")
            shop.click("[data-testid=send]")
            shop.wait_for_selector("text=The campaign is queued for sending")
            _wait_text(shop, url, "[data-testid=status-label]", r"^failed$")
            reasons = shop.inner_text("[data-testid=failure-reasons]")
            assert "Sender missing and no global set" in reasons, reasons
            failed = int(shop.inner_text("[data-testid=n-failed]"))
            held_out = int(shop.inner_text("[data-testid=n-holdout]"))
            assert failed + held_out == count
            assert "No message reached a phone." in shop.inner_text("[data-testid=status-panel]")
            b.shot(shop, "31-campaign-failed")
            shop.goto(stack.base + "/merchant/campaigns")
            assert shop.inner_text("[data-testid=list-status]") == "failed"
            cid = url.rsplit("/", 1)[1]
            op.goto(f"{stack.base}/operator/campaigns/{cid}")
            assert "Sender missing and no global set" in op.inner_text(
                "[data-testid=failure-reasons]")
            b.shot(op, "32-operator-failed")
            assert phone.received == []

            # --- 2. the operator sets the sender, restarts, retries: one message each
            stack.serve(sms_sender="JOYMALL")
            op.goto(f"{stack.base}/operator/campaigns")
            assert op.locator("[data-testid=gateway-checks] li.bad").count() == 0
            op.fill("[data-testid=test-phone]", "139 0000 0001")
            op.fill("[data-testid=test-text]", "测试短信，请忽略。")
            op.click("[data-testid=test-send]")
            result = op.inner_text("[data-testid=test-result]")
            assert "139****0001" in result and ("sent" in result or "delivered" in result)
            test_sms = phone.wait_for(1, timeout=20)
            assert test_sms[0].text == "测试短信，请忽略。回复TD退订", test_sms
            op.goto(f"{stack.base}/operator/campaigns/{cid}")
            op.check("[data-testid=retry-confirm]")
            op.click("[data-testid=retry]")
            op.wait_for_selector("text=Failed messages are queued again")
            _wait_text(op, f"{stack.base}/operator/campaigns/{cid}",
                       "[data-testid=status-label]", r"^completed$")
            _wait_text(op, f"{stack.base}/operator/campaigns/{cid}",
                       "[data-testid=n-delivered]", rf"^{failed}$")
            b.shot(op, "33-operator-retried")
            got = [m for m in phone.wait_for(1 + failed, timeout=20)][1:]
            per_number = Counter(m.receiver for m in got)
            assert len(per_number) == failed and set(per_number.values()) == {1}
            assert set(per_number) <= {"+86" + by_id[c] for c in gold}
            assert all(m.kind == "ucs-2" and m.text.endswith("本周末全场8折，欢迎光临。回复TD退订")
                       and "STOP" not in m.text and m.sender == "JOYMALL" for m in got), got
            shop.goto(url)
            b.shot(shop, "34-campaign-completed")

            # --- 2b. fifteen days later (backdated), with the owner's purchases: the lift
            _plant_purchases(stack, int(cid))
            owner = b.as_("mall")
            owner.goto(f"{stack.base}/owner/campaigns/{cid}")
            owner.wait_for_selector("[data-testid=lift-chart]")
            row = owner.inner_text("[data-testid=lift-row]")
            assert "Gold" in row and "%" in row, row
            b.shot(owner, "38-owner-campaign-lift")
            shop.goto(url)
            assert "fewer than 50 customers in a group" in shop.inner_text("[data-testid=lift]")

            # --- 3. a customer's own STOP cannot be lifted by the operator
            customer = next(iter(per_number))
            phone.send_mo(customer, "10086", "STOP")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                op.goto(stack.base + "/opt-outs")
                if op.inner_text("[data-testid=n-opt-outs]").strip() == "1":
                    break
                time.sleep(0.3)
            op.fill("[data-testid=oo-phone]", customer)
            op.select_option("[data-testid=oo-kind]", "opt_out")
            op.select_option("[data-testid=oo-action]", "remove")
            op.fill("[data-testid=oo-reason]", "the merchant wants to reach them")
            before = len(b.errors)
            op.click("[data-testid=oo-apply]")
            op.wait_for_selector("p.error")
            # The refusal is a 409 page; chromium logs the status as a console error.
            assert [e for e in b.errors[before:] if "409" not in e] == []
            del b.errors[before:]
            error = op.inner_text("p.error")
            assert "opted out themselves by SMS" in error and "START" in error, error
            assert op.inner_text("[data-testid=n-opt-outs]").strip() == "1"
            assert customer[3:] not in op.content()
            b.shot(op, "35-operator-cannot-lift-stop")

            # --- 4. quiet hours: the page says when; cancelling asks first
            now = datetime.now(ZoneInfo("Asia/Shanghai"))
            start, end = now - timedelta(hours=1), now + timedelta(hours=3)
            stack.serve(sms_sender="JOYMALL", quiet_hours=f"{start:%H:%M}-{end:%H:%M}")
            shop = b.as_("shop")
            url = _compose(shop, stack.base, "夜间预告", 1)
            shop.check("[data-testid=confirm]")
            shop.click("[data-testid=send]")
            label = _wait_text(shop, url, "[data-testid=status-label]", r"^waiting until")
            assert label == f"waiting until {end:%H:%M} Asia/Shanghai", label
            lines = shop.inner_text("[data-testid=status-panel]")
            assert re.search(rf"\d+ messages will go out at {end:%H:%M} Asia/Shanghai "
                             r"\(in 2 h 5\d min\)", lines), lines
            b.shot(shop, "36-campaign-waiting")
            shop.click("[data-testid=cancel]")
            shop.wait_for_selector("[data-testid=cancel-confirm]")
            assert "will not be sent" in shop.content()
            b.shot(shop, "37-cancel-confirm")
            shop.click("[data-testid=cancel-confirm]")
            shop.wait_for_selector("text=Cancelled before any message went out")
            assert shop.inner_text("#campaign-status") == "cancelled"
        finally:
            b.close()
    assert b.errors == [], b.errors
    # Only the test message and the retried campaign reached phones.
    assert len(phone.received) == 1 + failed

    # No full number in any page or the server log.
    haystack = "\n".join(b.pages) + stack.log_path.read_text()
    flat = re.sub(r"[\s-]", "", haystack)
    assert [row[1] for row in CUSTOMERS if row[1] in flat] == []
    assert "13900000001" not in flat
