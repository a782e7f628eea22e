"""The cross-organisation joint job in Chromium, as the owners of two nodes use it: North
invites, South reviews (fingerprint, terms) and accepts, both see the model; a page without
node settings says what to set. Screenshots go to docs/img (40-43)."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

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


def test_two_nodes_invite_accept_and_see_the_model(browser: Any, tmp_path: Path) -> None:
    nodes = ("north", "south")
    with ExitStack() as stack:
        services = stack.enter_context(joint_services(tmp_path / "services", nodes))
        handles = {n: stack.enter_context(platform_node(tmp_path / "nodes", n, services))
                   for n in nodes}
        for i, n in enumerate(nodes):
            customers, tx = demo_rows(n_customers=120, seed=50 + i)
            client = handles[n].client()
            client.upload("customers", csv_bytes(
                ["customer_id", "phone", "consent", "first_name", "timezone"], customers))
            client.upload("transactions", csv_bytes(
                ["transaction_id", "customer_id", "date", "amount", "category"], tx))
        north = BrowserSession(browser, handles["north"].url, {"mall": PASSWORD})
        south = BrowserSession(browser, handles["south"].url, {"mall": PASSWORD})
        north.login("mall")
        north.go("/owner/nodes")
        fingerprint = north.page.inner_text("#node-fingerprint")
        north.page.fill("input[name=k]", "3")
        north.page.fill("input[name=nodes]", "south")
        north.page.fill("input[name=window_days]", "3650")
        north.submit("#invite-form button[type=submit]")
        invitation = north.page.input_value("#invitation")
        assert invitation.startswith("cseg-invite.1.")
        _shot(north, "40-node-invitation-created")

        south.login("mall")
        south.go("/owner/nodes")
        south.page.fill("#review-form textarea", invitation)
        south.submit("#review-form button[type=submit]")
        assert south.page.inner_text("#review-fingerprint") == fingerprint
        _shot(south, "41-node-invitation-review")
        south.submit("#accept-form button[type=submit]")
        for _ in range(600):
            south.page.reload()
            if south.page.inner_text("#job-status") in ("done", "failed"):
                break
            south.page.wait_for_timeout(500)
        assert south.page.inner_text("#job-status") == "done", south.page.content()
        assert "north, south" in south.page.inner_text("#job-nodes")
        _shot(south, "42-node-job-done")
        assert not north.errors and not south.errors, (north.errors, south.errors)
        north.close()
        south.close()


def test_a_platform_that_is_not_a_node_says_what_to_set(browser: Any, tmp_path: Path) -> None:
    from e2e.browser_support import platform_env, run_cli, serve

    env = platform_env(tmp_path / "data")
    run_cli(env, "db", "upgrade")
    run_cli(env, "users", "create", "mall", "--role", "owner", stdin=PASSWORD + "\n")
    with serve(env, tmp_path / "serve.log") as base:
        s = BrowserSession(browser, base, {"mall": PASSWORD})
        s.login("mall")
        s.go("/owner/nodes")
        text = s.page.inner_text("#node-config-problem")
        assert "CIPHERSEG_NODE_NAME" in text and "docs/deployment.md" in text
        s.go("/owner/joint")
        assert "One company, one trust domain" in s.page.inner_text("#trust-domain")
        _shot(s, "43-joint-one-trust-domain")
        s.close()
