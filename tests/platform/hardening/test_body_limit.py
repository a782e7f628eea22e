"""Finding 1 (issue 16): bodies are bounded before anything parses them. Anonymous bodies to
routes that need a login are answered without being read; every route has a limit (the
upload limit for uploads, 1 MB otherwise) on the declared length and on what arrives
chunked; a refused upload leaves no temporary file, no stored file and no upload row.

The live tests attack ``cipherseg serve`` from outside over loopback with 200 MB bodies and
sample the server's open temporary files while they send."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import func, select

from cipherseg.platform.models import Upload
from hardening_support import (
    http_login,
    live_server,
    platform_env,
    prepared_data_dir,
    send_big_body,
    temp_bytes_held,
)

MB = 1 << 20


def test_declared_length_over_the_limit_is_refused_unread(splatform) -> None:  # type: ignore[no-untyped-def]
    anon = splatform.client()
    r = anon.tc.post("/login", content=b"x" * (2 * MB),
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and r.headers["connection"] == "close"
    api = anon.tc.post("/api/v1/uploads", content=b"x" * 10,
                       headers={"content-type": "multipart/form-data; boundary=b"})
    assert api.status_code == 401 and api.json()["detail"].startswith("log in first")
    page = anon.tc.post("/owner/uploads", content=b"x" * 10,
                        headers={"content-type": "multipart/form-data; boundary=b"})
    assert page.status_code == 303 and page.headers["location"] == "/login"


def test_a_body_for_a_route_the_role_may_not_use_is_refused_unread(splatform) -> None:  # type: ignore[no-untyped-def]
    from cipherseg.platform.models import Role

    shop = splatform.as_role(Role.MERCHANT)
    r = shop.tc.post("/owner/uploads", content=b"x" * (3 * MB),
                     headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 403 and "nothing was read" in r.text
    owner = splatform.as_role(Role.OWNER)
    ok = owner.upload("customers", "c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n")
    assert ok.status_code == 303


def test_chunked_bodies_are_counted(splatform) -> None:  # type: ignore[no-untyped-def]
    anon = splatform.client()

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"username=" + b"a" * (64 * 1024)

    r = anon.tc.post("/login", content=chunks(),
                     headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413


@pytest.mark.slow
def test_anonymous_200_mb_bodies_are_answered_unread(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    prepared_data_dir(data).engine.dispose()
    with live_server(platform_env(data), tmp_path / "serve.log") as (base, proc):
        baseline = temp_bytes_held(proc.pid)
        results = {
            "upload page": send_big_body(base, proc.pid, "/owner/uploads", 200 * MB),
            "upload api": send_big_body(base, proc.pid, "/api/v1/uploads", 200 * MB),
            "login": send_big_body(base, proc.pid, "/login", 200 * MB),
            "login chunked": send_big_body(base, proc.pid, "/login", 200 * MB, chunked=True),
            "upload chunked": send_big_body(base, proc.pid, "/owner/uploads", 200 * MB,
                                            chunked=True),
            "admin form": send_big_body(base, proc.pid, "/admin/users", 200 * MB,
                                        content_type="application/x-www-form-urlencoded"),
            "gateway": send_big_body(base, proc.pid, "/gateway/kannel/mo", 200 * MB,
                                     chunked=True),
            "unknown route": send_big_body(base, proc.pid, "/nowhere", 200 * MB),
        }
        for name, out in results.items():
            print(f"{name}: {out.status} after {out.seconds:.3f} s, {out.sent / MB:.1f} MB "
                  f"sent, {out.max_temp / MB:.2f} MB temporary files held")
            assert out.status in (303, 401, 405, 413), (name, out)
            assert out.max_temp - baseline < 2 * MB, (name, out)
            assert out.sent < 200 * MB, (name, out)  # answered before the body ended
        # the server still serves
        assert httpx.get(base + "/healthz").status_code == 200


@pytest.mark.slow
def test_refused_owner_uploads_leave_nothing_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    ctx = prepared_data_dir(data)
    with live_server(platform_env(data, max_upload_mb="5"), tmp_path / "serve.log") as (
            base, proc), httpx.Client(base_url=base, follow_redirects=False) as owner:
        csrf = http_login(owner, "mall")
        cookie = "; ".join(f"{k}={v}" for k, v in owner.cookies.items())
        headers = {"Cookie": cookie, "X-CSRF-Token": csrf}
        declared = send_big_body(base, proc.pid, "/owner/uploads", 50 * MB, headers=headers)
        streamed = send_big_body(base, proc.pid, "/owner/uploads", 50 * MB, chunked=True,
                                 headers=headers)
        for out in (declared, streamed):
            assert out.status == 413, out
            assert out.max_temp < 7 * MB, out
        with httpx.Client(base_url=base, follow_redirects=False) as shop:
            shop_csrf = http_login(shop, "shop")
            merchant = send_big_body(base, proc.pid, "/owner/uploads", 5 * MB - 1, headers={
                "Cookie": "; ".join(f"{k}={v}" for k, v in shop.cookies.items()),
                "X-CSRF-Token": shop_csrf})
        assert merchant.status == 403 and merchant.max_temp < 2 * MB, merchant
        assert temp_bytes_held(proc.pid) < MB
        # what fits is accepted
        ok = owner.post("/owner/uploads", data={"kind": "customers", "csrf_token": csrf},
                        files={"file": ("c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n",
                                        "text/csv")})
        assert ok.status_code == 303 and re.search(r"/owner/uploads/\d+$", ok.headers["location"])
    uploads = data / "uploads"
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Upload)) == 1
    leftovers = [p for p in uploads.iterdir()] if uploads.exists() else []
    assert len(leftovers) <= 1  # only the accepted file, if the worker has not run yet
    ctx.engine.dispose()
