"""Vertical segmentation in Chromium, as the merchant and the mall's owner use it: the
merchant asks on the mall's platform, the owner approves, the merchant's page gives the
terms and the command its machine runs (``cipherseg vertical join``, started here as the
merchant would), the owner sees the shared customers' segments and releases them, the
merchant sees the release. Screenshots go to docs/img (44-48)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cipherseg.platform.demo_data import demo_rows
from cipherseg.testing.joint_services import joint_services
from cipherseg.testing.nodes import PASSWORD, csv_bytes, platform_node
from e2e.browser_support import ROOT, SHOTS, BrowserSession

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
DOCS_IMG = ROOT / "docs" / "img"


def _shot(session: BrowserSession, name: str) -> None:
    session.shot(name)
    shutil.copyfile(SHOTS / f"{name}.png", DOCS_IMG / f"{name}.png")


def _wait_text(session: BrowserSession, selector: str, wanted: tuple[str, ...]) -> str:
    for _ in range(600):
        session.page.reload()
        text = session.page.inner_text(selector)
        if text in wanted:
            return text
        session.page.wait_for_timeout(500)
    raise AssertionError(session.page.content())


def test_merchant_requests_owner_approves_both_see_segments(browser: Any, tmp_path: Path
                                                            ) -> None:
    customers, tx = demo_rows(n_customers=400, seed=61)
    rng = np.random.default_rng(7)
    home = tmp_path / "cafe-machine"
    home.mkdir()
    rows = [c[1] for c in customers if rng.random() < 0.7] + [
        f"139{rng.integers(10**7, 10**8)}" for _ in range(80)]
    group = rng.integers(0, 4, len(rows))
    visits = np.log1p(rng.poisson(np.array([1, 4, 12, 30])[group]))
    spend = np.log1p(rng.gamma(4, np.array([5, 15, 40, 90])[group]))
    (home / "cafe.csv").write_text("phone,visits,spend\n" + "".join(
        f"{p},{v:.6f},{s:.6f}\n" for p, v, s in zip(rows, visits, spend, strict=True)))
    with ExitStack() as stack:
        services = stack.enter_context(joint_services(tmp_path / "services", ["mall", "cafe"]))
        mall = stack.enter_context(platform_node(tmp_path / "nodes", "mall", services))
        client = mall.client()
        client.upload("customers", csv_bytes(
            ["customer_id", "phone", "consent", "first_name", "timezone"], customers))
        client.upload("transactions", csv_bytes(
            ["transaction_id", "customer_id", "date", "amount", "category"], tx))
        merchant = BrowserSession(browser, mall.url, {"shop": PASSWORD})
        owner = BrowserSession(browser, mall.url, {"mall": PASSWORD})

        merchant.login("shop")
        merchant.go("/merchant/vertical")
        merchant.page.fill("input[name=node]", "cafe")
        merchant.page.fill("input[name=columns]", "visits, spend")
        merchant.page.fill("input[name=k]", "4")
        merchant.page.fill("textarea[name=note]", "Coffee lovers among your shoppers")
        _shot(merchant, "44-vertical-merchant-request")
        merchant.submit("#vertical-request-form button[type=submit]")
        assert merchant.page.inner_text("#job-status") == "requested"

        owner.login("mall")
        owner.go("/owner/vertical")
        owner.page.click("#vertical-jobs a")
        owner.page.fill("input[name=window_days]", "3650")
        _shot(owner, "45-vertical-owner-review")
        owner.submit("#approve-form button[type=submit]")

        merchant.page.reload()
        assert "cipherseg vertical join" in merchant.page.inner_text("#join-command")
        _shot(merchant, "46-vertical-merchant-command")
        href = merchant.page.get_attribute("#terms-link", "href")
        terms = merchant.page.request.get(mall.url + str(href)).text()
        (home / "terms.json").write_text(terms)
        for service, tokens in (("manager", services.manager_tokens),
                                ("centre", services.centre_tokens)):
            (home / f"{service}.token").write_text(tokens["cafe"] + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
        done = subprocess.run(
            [sys.executable, "-m", "cipherseg", "vertical", "join", "--terms", "terms.json",
             "--node", "cafe", "--data", "cafe.csv",  # the terms name the region
             "--manager", services.manager_url, "--manager-token-file", "manager.token",
             "--centre", services.centre_url, "--centre-token-file", "centre.token",
             "--out", "segments.csv"], cwd=home, env=env, capture_output=True, text=True,
            timeout=600, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "shared customers in 4 segments" in done.stdout

        assert _wait_text(owner, "#job-status", ("done", "failed")) == "done", \
            owner.page.content()
        assert "visits" in owner.page.inner_text("#merchant-centres")
        _shot(owner, "47-vertical-owner-segments")
        owner.submit("#release-form button[type=submit]")
        assert "shop" in owner.page.inner_text("#released-to")

        merchant.go("/merchant/joint")
        assert "mall, cafe" in merchant.page.inner_text("main")
        _shot(merchant, "48-vertical-merchant-release")
        assert not owner.errors and not merchant.errors, (owner.errors, merchant.errors)
        owner.close()
        merchant.close()
