"""Who asks, who sees, who runs it — in Debian's chromium, each flow on a fresh database:

1. merchant A requests a segmentation → the owner approves → it runs and is released to A →
   merchant B sees nothing (page and API) and cannot target it → A's campaign goes out;
2. an administrator resets a password → the user logs in with the one-time password and must
   choose a new one before anything else;
3. an administrator edits the permission matrix and it takes effect at once.

Screenshots go to ``artefacts/screenshots`` (``docs/img`` has the ones the docs show); no
page may raise a console error other than the refusals the flows provoke on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.browser_support import BrowserSession, platform_env, run_cli, serve

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORDS = {"admin": "admin passphrase 1", "mall": "owner passphrase 1",
             "shop-a": "merchant a passphrase", "shop-b": "merchant b passphrase",
             "sms": "operator passphrase 1"}
ROLES = {"admin": "admin", "mall": "owner", "shop-a": "merchant", "shop-b": "merchant",
         "sms": "operator"}
#: What a flow provokes on purpose (403 pages, a refused form): not errors of the page.
EXPECTED = re.compile(r"status of (400|403)")


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A fresh database with one account per party, and ``cipherseg serve`` on it."""
    env = platform_env(tmp_path / "data", quiet_hours="off", min_segment_size="30")
    run_cli(env, "db", "upgrade")
    for name, role in ROLES.items():
        run_cli(env, "users", "create", name, "--role", role, stdin=PASSWORDS[name] + "\n")
    with serve(env, tmp_path / "server.log") as base:
        yield {"base": base, "env": env, "tmp": tmp_path, "log": tmp_path / "server.log"}


@pytest.fixture
def sessions(platform, browser) -> Iterator[dict[str, BrowserSession]]:  # type: ignore[no-untyped-def]
    """A logged-in browser per account (created on first use); checks console errors."""
    opened: dict[str, BrowserSession] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> BrowserSession:
            s = BrowserSession(browser, str(platform["base"]), PASSWORDS)
            s.login(name)
            opened[name] = s
            self[name] = s
            return s

    yield Lazy()
    errors = [e for s in opened.values() for e in s.errors if not EXPECTED.search(e)]
    for s in opened.values():
        s.close()
    assert errors == [], errors


def _upload_demo(owner: BrowserSession, env: dict[str, str], tmp: Path) -> None:
    run_cli(env, "db", "demo-data", str(tmp / "demo"), "--customers", "240")
    for kind in ("customers", "transactions"):
        owner.go("/owner/data")
        owner.page.select_option("select[name=kind]", kind)
        owner.page.set_input_files("input[type=file]", str(tmp / "demo" / f"{kind}.csv"))
        owner.page.click("#upload-form button")
        owner.page.wait_for_selector("#upload-status:text('imported')", timeout=60_000)


def test_request_approve_release_and_campaign(platform, sessions) -> None:  # type: ignore[no-untyped-def]
    owner, a = sessions["mall"], sessions["shop-a"]
    _upload_demo(owner, platform["env"], platform["tmp"])

    # merchant A asks the mall; a wrong form says what is wrong
    a.go("/merchant/requests")
    a.page.select_option("select[name=owner]", "mall")
    a.submit("#request-form button")
    assert "say what the segmentation is for" in a.page.content()
    a.go("/merchant/requests")
    a.page.select_option("select[name=owner]", "mall")
    a.page.fill("textarea[name=purpose]", "Spring re-engagement: find lapsed high spenders")
    a.page.fill("input[name=k]", "3")
    a.page.check("input[name=window][value=days]")
    a.page.fill("input[name=window_days]", "365")
    a.shot("11-merchant-request")
    a.submit("#request-form button")
    assert "Request sent to the data owner." in a.page.content()
    assert "waiting for the data owner" in a.page.content()

    # the owner is told, reads the request and approves it
    owner.go("/owner/jobs")
    assert "1 segmentation request from merchants is waiting" in owner.page.content()
    owner.go("/owner/requests/1")
    assert "last 365 days" in owner.page.content()
    owner.shot("12-owner-request")
    owner.submit("#approve-form button")
    assert owner.page.url.endswith("/owner/jobs/1?done=request_approved")
    owner.page.wait_for_selector("#job-status:text('done')", timeout=180_000)
    owner.page.wait_for_selector("#grants")
    assert "shop-a" in owner.page.inner_text("#grants")
    assert "shop-b" not in owner.page.inner_text("#grants")
    owner.shot("13-owner-released-to-a")

    # A sees the release; B sees nothing, on the page and in the API
    a.go("/merchant/requests/1")
    assert "released to the merchant" in a.page.content()
    a.go("/merchant/segments")
    assert a.page.locator("table.segments tbody tr").count() >= 2
    assert "mall · segmentation #1" in a.page.content()
    a.shot("14-merchant-a-segments")
    b = sessions["shop-b"]
    b.go("/merchant/segments")
    assert "No segmentation has been released to you yet" in b.page.content()
    assert b.page.locator("table.segments").count() == 0
    b.shot("15-merchant-b-nothing")
    assert b.ctx.request.get(str(platform["base"]) + "/api/v1/releases").json() == []
    # ... and cannot target it, even with the release's id taken from A's form
    a.go("/merchant/campaigns/new")
    release_id = a.page.get_attribute("input[name=job_id]", "value")
    b.go("/merchant/campaigns/new")
    assert "No segmentation has been released to you yet" in b.page.content()
    r = b.ctx.request.post(str(platform["base"]) + "/merchant/campaigns", form={
        "csrf_token": b.csrf(), "job_id": str(release_id), "name": "Steal",
        "pos": "0", "tpl": "Hi {{ opt_out }}", "use": "0"})
    assert r.status == 400 and "not released to you" in r.text()

    # A's campaign goes out (outbox gateway)
    a.go("/merchant/campaigns/new")
    a.page.fill("input[name=name]", "Spring weekend")
    a.page.fill("input[name=shop_name]", "Joy Mall")
    a.submit("#compose button[type=submit]")
    assert "Campaign saved as a draft" in a.page.content()
    a.page.check("[data-testid=confirm]")
    a.submit("[data-testid=send]")
    campaign_url = a.page.url.split("?")[0]
    for _ in range(120):
        a.page.goto(campaign_url)
        if a.page.inner_text("#campaign-status") == "completed":
            break
        a.page.wait_for_timeout(1000)
    assert a.page.inner_text("#campaign-status") == "completed"
    assert int(a.page.inner_text("[data-testid=n-sent]")) > 0
    a.shot("16-merchant-a-campaign-sent")
    sms = sessions["sms"]
    sms.go("/operator/audiences")
    assert "shop-a" in sms.page.inner_text("#audiences")
    assert "1 approved" in sms.page.inner_text("#request-counts")
    assert "Spring re-engagement" not in sms.page.content()
    sms.shot("17-operator-audiences")


def test_password_reset_and_forced_change(platform, sessions, browser) -> None:  # type: ignore[no-untyped-def]
    admin = sessions["admin"]
    # the user form: no default role, errors in words
    admin.go("/admin/users")
    assert admin.page.eval_on_selector("#create-user select[name=role]", "e => e.value") == ""
    admin.page.fill("#create-user input[name=username]", "new user")
    admin.page.fill("#create-user input[name=password]", "long enough passphrase")
    admin.page.select_option("#create-user select[name=role]", "owner")
    admin.submit("#create-user button")
    assert "may contain only letters, digits and _ . @ - (it contains a space)" in \
        admin.page.content()
    admin.shot("24-admin-user-form-error")

    victim = sessions["shop-a"]
    admin.go("/admin/users")
    admin.submit("button[aria-label='reset the password of shop-a']")
    temp = admin.page.inner_text("#temporary-password").strip()
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", temp)
    admin.shot("25-admin-temporary-password")
    victim.go("/merchant/segments")
    assert "/login" in victim.page.url                         # the old session ended

    user = BrowserSession(browser, str(platform["base"]), PASSWORDS)
    try:
        user.login("shop-a", temp)
        assert user.page.url.endswith("/account/password")
        assert "Choose a new password" in user.page.content()
        user.go("/merchant/segments")                          # anything else: back here
        assert user.page.url.endswith("/account/password")
        user.page.fill("input[name=new]", "my own passphrase")
        user.page.fill("input[name=confirm]", "my own passphrase!")
        user.submit("#password-form button")
        assert "the new password and its confirmation differ" in user.page.content()
        user.shot("26-forced-password-change")
        user.page.fill("input[name=new]", "my own passphrase")
        user.page.fill("input[name=confirm]", "my own passphrase")
        user.submit("#password-form button")
        assert "/merchant/segments" in user.page.url
        assert "Password changed." in user.page.content()
        assert user.errors == [] or all(EXPECTED.search(e) for e in user.errors)
    finally:
        user.close()
    again = BrowserSession(browser, str(platform["base"]), PASSWORDS)
    try:
        again.login("shop-a", temp, expect_ok=False)           # the temporary one is used up
        assert "Wrong user name or password" in again.page.content()
        again.login("shop-a", "my own passphrase")
    finally:
        again.close()
    admin.go("/admin/audit?action=password_reset")
    assert "shop-a" in admin.page.inner_text("#audit")


def test_a_permission_edit_takes_effect(platform, sessions) -> None:  # type: ignore[no-untyped-def]
    admin, shop, sms = sessions["admin"], sessions["shop-a"], sessions["sms"]
    shop.go("/merchant/segments")
    assert shop.page.locator("nav a[href='/merchant/requests']").count() == 1
    sms.go("/operator/audiences")
    assert sms.page.locator("nav a[href='/admin/audit']").count() == 0

    admin.go("/admin/permissions")
    # guard rails: owner data only for owners, users.manage fixed for the administrator
    assert admin.page.locator("input[aria-label^='Merchant: Run segmentations']").count() == 0
    assert admin.page.is_disabled(
        "input[aria-label='Administrator: Manage accounts (always)']")
    admin.page.uncheck("input[value='merchant:request.create']")
    admin.page.check("input[value='operator:audit.read']")
    admin.shot("27-admin-permissions")
    admin.submit("#permissions-form button")
    assert "Permissions saved" in admin.page.content()

    shop.go("/merchant/segments")                              # the next click sees it
    assert shop.page.locator("nav a[href='/merchant/requests']").count() == 0
    shop.go("/merchant/requests")
    assert "lacks the permission request.create (request segmentations)" in \
        shop.page.content()
    shop.shot("28-merchant-permission-refused")
    sms.go("/operator/audiences")
    sms.page.click("nav a[href='/admin/audit']")
    sms.page.wait_for_load_state()
    assert "permission_change" in sms.page.content()
    admin.go("/admin/audit")
    groups = admin.page.eval_on_selector_all("select[name=action] optgroup",
                                             "gs => gs.map(g => g.label)")
    assert "Releases and requests" in groups and "Campaigns and opt-outs" in groups
