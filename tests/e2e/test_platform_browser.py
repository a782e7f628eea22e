"""Real-browser walk through the platform: Debian's chromium driven by Playwright against
``cipherseg serve`` started as a subprocess on a free loopback port.

Each role logs in and does its part; screenshots go to ``artefacts/screenshots`` (the ones
``docs/quickstart.md`` uses are copied to ``docs/img``). The pages must raise no console
error (so no Content-Security-Policy violation either) and show no unmasked phone number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.browser_support import BrowserSession, platform_env, run_cli, serve

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORDS = {"admin": "admin passphrase 1", "mall": "owner passphrase 1",
             "shop": "merchant passphrase 1", "sms": "operator passphrase 1",
             "centre": "centre passphrase 1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, object]]:  # type: ignore[no-untyped-def]
    """`cipherseg db upgrade`, `cipherseg users create admin`, then `cipherseg serve`."""
    data = tmp_path_factory.mktemp("e2e-data")
    env = platform_env(data)
    run_cli(env, "db", "upgrade")
    run_cli(env, "users", "create", "admin", "--role", "admin", stdin=PASSWORDS["admin"] + "\n")
    with serve(env, data / "server.log") as base:
        yield {"base": base, "log": data / "server.log", "data": data}


def test_each_role_walks_its_main_flow(server, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = str(server["base"])
    sessions: list[BrowserSession] = []

    def session() -> BrowserSession:
        s = BrowserSession(browser, base, PASSWORDS)
        sessions.append(s)
        return s

    # --- admin creates the accounts --------------------------------------------------
    admin = session()
    admin.go("/login")
    admin.shot("01-login")
    admin.login("admin")
    for name, role in (("mall", "owner"), ("shop", "merchant"), ("sms", "operator")):
        admin.page.fill("input[name=username]", name)
        admin.page.fill("input[name=password]", PASSWORDS[name])
        admin.page.select_option("select[name=role]", role)
        admin.page.click("form[action='/admin/users'] button")
        admin.page.wait_for_load_state()
        assert "User created." in admin.page.content()
    admin.shot("02-admin-users")

    # --- owner: download demo data, upload it, watch progress -------------------------
    owner = session()
    owner.login("mall")
    owner.shot("03-owner-data")
    files = {}
    for kind in ("customers", "transactions"):
        with owner.page.expect_download() as dl:
            owner.page.click(f"a[href='/owner/demo/{kind}.csv']")
        files[kind] = tmp_path / f"{kind}.csv"
        dl.value.save_as(files[kind])
    with owner.page.expect_download() as dl:
        owner.page.click("a[href='/owner/templates/customers.xlsx']")
    assert dl.value.suggested_filename.endswith(".xlsx")
    for kind in ("customers", "transactions"):
        owner.go("/owner/data")
        owner.page.select_option("select[name=kind]", kind)
        owner.page.set_input_files("input[type=file]", str(files[kind]))
        owner.page.click("#upload-form button")
        owner.page.wait_for_selector("#upload-status:text('imported')", timeout=60_000)
        owner.shot(f"04-upload-{kind}")
    # a bad file: nothing imported, every bad row listed
    bad = tmp_path / "bad.csv"
    lines = files["customers"].read_text().splitlines()
    lines[3] = lines[3].replace(",yes,", ",perhaps,").replace(",no,", ",perhaps,")
    lines[5] = re.sub(r",1\d{10},", ",12345,", lines[5])
    bad.write_text("\n".join(lines[:8]) + "\n")
    owner.go("/owner/data")
    owner.page.set_input_files("input[type=file]", str(bad))
    owner.page.click("#upload-form button")
    owner.page.wait_for_selector("#upload-status:text('rejected')", timeout=60_000)
    assert "2 of 7 rows have problems" in owner.page.content()
    owner.shot("05-upload-rejected")
    owner.go("/owner/customers")
    assert owner.page.locator("td.phone").count() == 50
    assert all("****" in t for t in owner.page.locator("td.phone").all_inner_texts())
    owner.shot("06-owner-customers")

    # --- owner: segmentation with live progress, then release --------------------------
    owner.go("/owner/jobs")
    owner.page.fill("input[name=k]", "4")
    owner.page.click("#job-form button")
    owner.page.wait_for_selector("#job-progress")
    owner.page.wait_for_selector("#job-status:text('done')", timeout=120_000)
    owner.shot("07-owner-segments")
    owner.page.check("#release-form input[value=shop]")
    owner.page.click("#release-form button")
    owner.page.wait_for_load_state()
    assert "Released to the merchants you chose." in owner.page.content()
    assert "sees it" in owner.page.inner_text("#grants")
    owner.shot("07b-owner-released")

    # --- merchant, operator, centre, admin audit ----------------------------------------
    shop = session()
    shop.login("shop")
    assert shop.page.locator("table.segments tbody tr").count() >= 2
    shop.shot("08-merchant-segments")
    sms = session()
    sms.login("sms")
    sms.shot("09-operator-audiences")
    admin.go("/admin/audit")
    admin.shot("10-admin-audit")
    assert "release_grant" in admin.page.content()

    # --- everything seen: no console error, no unmasked phone number --------------------
    phones = [line.split(",")[1] for line in files["customers"].read_text().splitlines()[1:]]
    seen = "\n".join(h for s in sessions for h in s.html) + Path(server["log"]).read_text()
    for phone in phones:
        assert phone not in seen and f"+86{phone}" not in seen
    errors = [e for s in sessions for e in s.errors]
    assert errors == [], errors
    for s in sessions:
        s.close()


def test_pages_work_without_javascript(server, browser) -> None:  # type: ignore[no-untyped-def]
    """Progressive enhancement: forms post and pages render with JavaScript disabled."""
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    page.goto(str(server["base"]) + "/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORDS["admin"])
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert "/admin/users" in page.url
    ctx.close()
