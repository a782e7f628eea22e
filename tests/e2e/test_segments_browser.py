"""Time windows, "choose k" and joint segments in Debian's chromium, each flow on a fresh
database:

1. a merchant requests a segmentation of the last 180 days with "let the data owner's run
   choose" → the owner approves without naming k → the run tries k = 2..8 through the
   encrypted protocol and keeps the recommended k, with its chart → the merchant sees it;
2. two malls segment together: the creator names the other mall and a window, the other
   accepts (the page updates itself), the joint segments are released to a merchant, who
   sends a campaign to a joint segment; both malls see the campaign, the operator the
   audience, the centre the job.

Screenshots go to ``artefacts/screenshots`` (``docs/img`` has the ones the docs show); no
page may raise a console error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.browser_support import BrowserSession, platform_env, run_cli, serve

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PASSWORDS = {"mall": "owner passphrase 1", "mall2": "owner passphrase 2",
             "shop": "merchant passphrase", "sms": "operator passphrase 1",
             "centre": "centre passphrase 1"}
ROLES = {"mall": "owner", "mall2": "owner", "shop": "merchant", "sms": "operator",
         "centre": "centre"}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[dict[str, object]]:
    env = platform_env(tmp_path / "data", quiet_hours="off", min_segment_size="20")
    run_cli(env, "db", "upgrade")
    for name, role in ROLES.items():
        run_cli(env, "users", "create", name, "--role", role, stdin=PASSWORDS[name] + "\n")
    with serve(env, tmp_path / "server.log") as base:
        yield {"base": base, "env": env, "tmp": tmp_path}


@pytest.fixture
def sessions(platform, browser) -> Iterator[dict[str, BrowserSession]]:  # type: ignore[no-untyped-def]
    opened: dict[str, BrowserSession] = {}

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> BrowserSession:
            s = BrowserSession(browser, str(platform["base"]), PASSWORDS)
            s.login(name)
            opened[name] = s
            self[name] = s
            return s

    yield Lazy()
    errors = [e for s in opened.values() for e in s.errors]
    for s in opened.values():
        s.close()
    assert errors == [], errors


def _upload_demo(owner: BrowserSession, env: dict[str, str], folder: Path, n: int,
                 seed: int) -> None:
    run_cli(env, "db", "demo-data", str(folder), "--customers", str(n), "--seed", str(seed))
    for kind in ("customers", "transactions"):
        owner.go("/owner/data")
        owner.page.select_option("select[name=kind]", kind)
        owner.page.set_input_files("input[type=file]", str(folder / f"{kind}.csv"))
        owner.page.click("#upload-form button")
        owner.page.wait_for_selector("#upload-status:text('imported')", timeout=60_000)


def test_a_request_with_a_window_and_choose_for_me(platform, sessions) -> None:  # type: ignore[no-untyped-def]
    owner, shop = sessions["mall"], sessions["shop"]
    _upload_demo(owner, platform["env"], platform["tmp"] / "demo", 240, 7)
    shop.go("/merchant/requests")
    shop.page.select_option("select[name=owner]", "mall")
    shop.page.fill("textarea[name=purpose]", "Summer offer: who bought recently, and what")
    shop.page.check("input[name=choose_k]")
    shop.page.check("input[name=window][value=days]")
    shop.page.fill("input[name=window_days]", "180")
    shop.page.check("input[name=features][value=categories]")
    shop.submit("#request-form button")
    assert "Request sent to the data owner." in shop.page.content()

    owner.go("/owner/requests/1")
    page = owner.page.content()
    assert "last 180 days" in page and "left to you" in page
    owner.submit("#approve-form button")
    assert "/owner/jobs/1" in owner.page.url
    owner.page.wait_for_selector("#job-status:text('done')", timeout=600_000)
    owner.page.wait_for_selector("#choose-k svg")
    text = owner.page.inner_text("#job-progress")
    assert "Recommended: k =" in text and "recency counted from the window's end" in text
    assert "Spend on" in owner.page.inner_text("table.segments")
    names = owner.page.locator("table.segments tbody td:first-child").all_inner_texts()
    assert len(set(names)) == len(names) and not any(n[-1].isdigit() for n in names)
    owner.shot("07c-owner-choose-k")

    shop.go("/merchant/requests/1")
    assert "released to the merchant" in shop.page.content()
    shop.go("/merchant/segments")
    assert shop.page.locator("table.segments tbody tr").count() >= 2
    shop.shot("14b-merchant-chosen-k-segments")


def test_a_joint_segment_used_in_a_campaign(platform, sessions) -> None:  # type: ignore[no-untyped-def]
    mall, mall2 = sessions["mall"], sessions["mall2"]
    _upload_demo(mall, platform["env"], platform["tmp"] / "demo1", 150, 7)
    _upload_demo(mall2, platform["env"], platform["tmp"] / "demo2", 150, 8)

    mall.go("/owner/joint")
    mall.page.fill("input[name=k]", "3")
    mall.page.check("input[name=participants]")
    mall.page.check("input[name=window][value=range]")
    mall.page.fill("input[name=window_from]", "2024-07-01")
    mall.page.fill("input[name=window_to]", "2025-06-30")
    mall.submit("#joint-form button[type=submit]")
    assert mall.page.url.endswith("/owner/joint/1")
    assert "awaiting" in mall.page.inner_text("#job-status")
    # the creator's page follows the job without a reload once the other mall accepts
    mall2.go("/owner/joint/1")
    mall2.submit("#accept-form button")
    mall.page.wait_for_selector("#job-status:text('done')", timeout=600_000)
    text = mall.page.inner_text("#joint-main")
    assert "2024-07-01 to 2025-06-30" in text
    recency = [float(t) for t in mall.page.locator("table.segments tbody td:nth-child(4)")
               .all_inner_texts()]
    assert recency and all(1 <= r <= 366 for r in recency), recency
    names = mall.page.locator("table.segments tbody td:first-child").all_inner_texts()
    assert len(set(names)) == len(names) and not any(n[-1].isdigit() for n in names)
    mall.page.check("#release-form input[value=shop]")
    mall.submit("#release-form button")
    mall.shot("17-owner-joint-segments")

    shop = sessions["shop"]
    shop.go("/merchant/joint")
    assert "joint segmentation #1" in shop.page.content()
    shop.go("/merchant/campaigns/new")
    assert "mall, mall2 (joint)" in shop.page.inner_text("#release-source")
    shop.page.fill("input[name=name]", "Pooled weekend")
    shop.page.fill("input[name=shop_name]", "Joy Mall")
    shop.submit("#compose button[type=submit]")
    assert "Campaign saved as a draft" in shop.page.content()
    shop.page.check("[data-testid=confirm]")
    shop.submit("[data-testid=send]")
    shop.page.wait_for_selector("[data-testid=status-label]:text('completed')",
                                timeout=120_000)
    campaign_url = shop.page.url.split("?")[0]
    shop.page.goto(campaign_url)
    shop.shot("18-merchant-joint-campaign")
    campaign = campaign_url.rsplit("/", 1)[1]

    for owner in (mall, mall2):
        owner.go("/owner/campaigns")
        assert f"/owner/campaigns/{campaign}" in owner.page.content()
    sms = sessions["sms"]
    sms.go("/operator/audiences")
    assert "mall, mall2 (joint)" in sms.page.content()
    centre = sessions["centre"]
    centre.go("/centre/jobs")
    assert "joint (2 owners on this platform)" in centre.page.content()
    centre.shot("19-centre-jobs-joint")
