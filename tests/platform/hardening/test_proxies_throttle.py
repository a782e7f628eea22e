"""Finding 7 (issue 16): proxy headers are trusted only from CIPHERSEG_TRUSTED_PROXIES
(default none; ``cipherseg serve`` no longer lets uvicorn trust loopback), the login
throttle is keyed by address and user name with a cap per user name over all addresses,
and an administrator can unlock."""

from __future__ import annotations

import re
import warnings

import httpx
import pytest

from cipherseg.platform.app import create_app
from hardening_support import PASSWORD, http_login, live_server, platform_env, prepared_data_dir

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def _client(app, address: str) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, client=(address, 50000), follow_redirects=False)


def _login(tc: TestClient, username: str, password: str, **headers: str) -> int:
    page = tc.get("/login", headers=headers)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return tc.post("/login", headers=headers, data={"username": username, "password": password,
                                                    "csrf_token": token}).status_code


def _last_ips(splatform, action: str = "login_failed") -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from cipherseg.platform.models import AuditEvent

    with splatform.ctx.sessions() as s:
        return list(s.scalars(select(AuditEvent.ip).where(AuditEvent.action == action)
                              .order_by(AuditEvent.id)))


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(splatform) -> None:  # type: ignore[no-untyped-def]
    tc = _client(splatform.app, "127.0.0.1")
    assert _login(tc, "mall", "wrong password", **{"X-Forwarded-For": "6.6.6.6"}) == 400
    assert _last_ips(splatform) == ["127.0.0.1"]
    splatform.ctx.settings.trusted_proxies = "10.0.0.0/8"
    app = create_app(context=splatform.ctx)
    via_proxy = _client(app, "10.1.2.3")
    # the right-most address the proxy did not add is the client; a forged left part is not
    assert _login(via_proxy, "mall", "wrong password",
                  **{"X-Forwarded-For": "1.1.1.1, 203.0.113.9, 10.9.9.9"}) == 400
    assert _client(app, "192.0.2.1").get("/healthz").status_code == 200
    assert _login(_client(app, "192.0.2.1"), "mall", "wrong password",
                  **{"X-Forwarded-For": "6.6.6.6"}) == 400
    assert _last_ips(splatform) == ["127.0.0.1", "203.0.113.9", "192.0.2.1"]


def test_failures_of_other_names_from_one_address_do_not_lock_anyone_out(splatform) -> None:  # type: ignore[no-untyped-def]
    tc = _client(splatform.app, "127.0.0.1")   # e.g. a proxy the platform does not trust
    for i in range(30):
        assert _login(tc, f"guess{i % 7}", "wrong password") in (400, 429)
    assert _login(tc, "admin", PASSWORD) == 303


def test_pair_throttle_and_global_cap_per_user_name(splatform) -> None:  # type: ignore[no-untyped-def]
    splatform.ctx.settings.trusted_proxies = "10.0.0.1"
    app = create_app(context=splatform.ctx)
    proxy = _client(app, "10.0.0.1")

    def attempt(address: str, password: str = "wrong password") -> int:
        proxy.cookies.clear()
        return _login(proxy, "mall", password, **{"X-Forwarded-For": address})

    assert [attempt("198.51.100.1") for _ in range(5)] == [400] * 5
    assert attempt("198.51.100.1", PASSWORD) == 429          # this pair waits ...
    assert attempt("198.51.100.2", PASSWORD) == 303          # ... the user elsewhere does not
    # 20 failures of one name from many addresses: the name waits everywhere
    for i in range(20):
        assert attempt(f"198.51.100.{10 + i % 4}") in (400, 429)
    assert attempt("198.51.100.99", PASSWORD) == 429
    # an administrator unlocks
    admin = splatform.client("admin")
    page = admin.get("/admin/users").text
    assert re.search(r'data-testid="failures-mall">2\d failed sign-ins', page)
    from sqlalchemy import select

    from cipherseg.platform.models import User

    with splatform.ctx.sessions() as s:
        mall_id = s.scalars(select(User.id).where(User.username == "mall")).one()
    r = admin.post(f"/admin/users/{mall_id}/unlock")
    assert r.status_code == 303 and "user_unlocked" in r.headers["location"]
    assert "failures-mall" not in admin.get("/admin/users").text
    assert attempt("198.51.100.99", PASSWORD) == 303
    assert "login_unlock" in {e for e in _actions(splatform)}


def _actions(splatform) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from cipherseg.platform.models import AuditEvent

    with splatform.ctx.sessions() as s:
        return list(s.scalars(select(AuditEvent.action)))


@pytest.mark.slow
@pytest.mark.parametrize(("trusted", "expected"), [("", "127.0.0.1"),
                                                   ("127.0.0.1", "6.6.6.6")])
def test_serve_trusts_forwarded_for_only_when_configured(tmp_path, trusted, expected) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    prepared_data_dir(data).engine.dispose()
    settings = {"trusted_proxies": trusted} if trusted else {}
    with live_server(platform_env(data, **settings), tmp_path / "serve.log") as (base, _p), \
            httpx.Client(base_url=base, follow_redirects=False, timeout=30) as c:
        page = c.get("/login", headers={"X-Forwarded-For": "6.6.6.6"})
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = c.post("/login", headers={"X-Forwarded-For": "6.6.6.6"},
                   data={"username": "mall", "password": "wrong password",
                         "csrf_token": token})
        assert r.status_code == 400
        c.cookies.clear()
        http_login(c, "admin")
        events = c.get("/api/v1/audit", params={"action": "login_failed"}).json()
        assert [e["ip"] for e in events] == [expected]
