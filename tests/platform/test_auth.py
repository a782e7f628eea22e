"""Login, sessions, cookies, throttling, disabling users, open redirects."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from cipherseg.platform.models import AuditEvent, User, WebSession
from cipherseg.platform.security import token_digest

PASSWORD = "correct horse battery"


def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(splatform) -> None:  # type: ignore[no-untyped-def]
    c = splatform.client()
    r = c.login("mall")
    assert r.status_code == 303 and r.headers["location"] == "/owner/data"
    cookie = r.headers["set-cookie"]
    assert "cipherseg_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # plain http here
    raw = c.tc.cookies["cipherseg_session"]
    with splatform.ctx.sessions() as s:
        rows = list(s.scalars(select(WebSession)))
        assert len(rows) == 1
        token = splatform.ctx.signer.unsign(raw)
        assert rows[0].id == token_digest(token) and token not in rows[0].id
    assert c.get("/owner/data").status_code == 200
    r = c.post("/logout")
    assert r.status_code == 303
    with splatform.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(WebSession)) == 0
    c.tc.cookies.set("cipherseg_session", raw)
    assert c.get("/owner/data").status_code == 303


def test_cookie_is_secure_behind_https(splatform) -> None:  # type: ignore[no-untyped-def]
    c = splatform.client(https=True)
    r = c.login("mall")
    assert "Secure" in r.headers["set-cookie"]


def test_wrong_password_is_refused_and_audited(splatform) -> None:  # type: ignore[no-untyped-def]
    c = splatform.client()
    r = c.login("mall", "not the password")
    assert r.status_code == 400 and "Wrong user name or password" in r.text
    r = c.login("nobody", "not the password")
    assert r.status_code == 400
    with splatform.ctx.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions.count("login_failed") == 2


def test_login_is_throttled_after_repeated_failures(splatform) -> None:  # type: ignore[no-untyped-def]
    limit = splatform.ctx.settings.login_max_failures
    c = splatform.client()
    for _ in range(limit):
        assert c.login("shop", "wrong password!").status_code == 400
    r = c.login("shop", PASSWORD)  # right password, but throttled
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    assert "cipherseg_session" not in c.tc.cookies
    # another account is not affected
    assert splatform.client().login("mall").status_code == 303


def test_disabled_user_cannot_log_in_and_loses_sessions(splatform) -> None:  # type: ignore[no-untyped-def]
    shop = splatform.client("shop")
    assert shop.get("/merchant/segments").status_code == 200
    admin = splatform.client("admin")
    with splatform.ctx.sessions() as s:
        shop_id = s.scalar(select(User.id).where(User.username == "shop"))
    r = admin.post(f"/admin/users/{shop_id}", {"role": "merchant", "active": "0"})
    assert r.status_code == 303
    assert shop.get("/merchant/segments").status_code == 303  # session ended
    assert splatform.client().login("shop").status_code == 400


def test_role_change_takes_effect_immediately(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    with splatform.ctx.sessions() as s:
        sms_id = s.scalar(select(User.id).where(User.username == "sms"))
    admin.post(f"/admin/users/{sms_id}", {"role": "merchant", "active": "1"})
    sms = splatform.client("sms")
    assert sms.get("/merchant/segments").status_code == 200
    assert sms.get("/operator/audiences").status_code == 403
    with splatform.ctx.sessions() as s:
        ev = s.scalars(select(AuditEvent).where(AuditEvent.action == "user_update")).one()
        assert ev.detail == {"role": "operator->merchant"}


def test_admin_cannot_lock_themselves_out(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    with splatform.ctx.sessions() as s:
        admin_id = s.scalar(select(User.id).where(User.username == "admin"))
    r = admin.post(f"/admin/users/{admin_id}", {"role": "admin", "active": "0"})
    assert r.status_code == 400 and "cannot disable yourself" in r.text


def test_admin_creates_users_with_strong_passwords_only(splatform) -> None:  # type: ignore[no-untyped-def]
    admin = splatform.client("admin")
    r = admin.post("/admin/users", {"username": "newshop", "password": "short",
                                    "role": "merchant"})
    assert r.status_code == 400 and "at least 10" in r.text
    r = admin.post("/admin/users", {"username": "newshop", "password": "a long passphrase",
                                    "role": "merchant"})
    assert r.status_code == 303
    r = admin.post("/admin/users", {"username": "newshop", "password": "a long passphrase",
                                    "role": "merchant"})
    assert r.status_code == 400 and "already exists" in r.text
    with splatform.ctx.sessions() as s:
        u = s.scalars(select(User).where(User.username == "newshop")).one()
        assert u.password_hash.startswith("$argon2id$")
    assert splatform.client().login("newshop", "a long passphrase").status_code == 303


def test_login_redirects_only_to_local_paths(splatform) -> None:  # type: ignore[no-untyped-def]
    for target, expected in (("/owner/jobs", "/owner/jobs"),
                             ("https://evil.example/", "/owner/data"),
                             ("//evil.example/x", "/owner/data"),
                             ("/\\evil.example", "/owner/data")):
        c = splatform.client()
        page = c.tc.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.tc.post("/login", data={"username": "mall", "password": PASSWORD,
                                      "csrf_token": token, "next": target})
        assert r.headers["location"] == expected, target


def test_anonymous_page_request_redirects_with_next(splatform) -> None:  # type: ignore[no-untyped-def]
    r = splatform.client().tc.get("/owner/jobs")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/owner/jobs"


def test_api_me_returns_role_and_csrf(splatform) -> None:  # type: ignore[no-untyped-def]
    c = splatform.client("centre")
    me = c.api("GET", "/api/v1/me").json()
    assert me["username"] == "centre" and me["role"] == "centre" and len(me["csrf_token"]) > 20
