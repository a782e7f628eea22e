"""Every route declares its roles; anonymous and wrong-role requests are refused; every
state-changing route checks the CSRF token. The routes are enumerated from the app itself,
so a new route without a role declaration fails here."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute, iter_route_contexts

from cipherseg.platform.deps import Allow
from cipherseg.platform.models import Role

PUBLIC = {("GET", "/healthz"), ("GET", "/"), ("GET", "/login"), ("POST", "/login")}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _allow_of(route: APIRoute) -> list[Allow]:
    found: list[Allow] = []

    def walk(dep) -> None:  # type: ignore[no-untyped-def]
        if isinstance(dep.call, Allow):
            found.append(dep.call)
        for sub in dep.dependencies:
            walk(sub)

    walk(route.dependant)
    return found


def _routes(app) -> list[tuple[str, str, APIRoute]]:  # type: ignore[no-untyped-def]
    """(method, full path, route) for every API route, including those of included routers."""
    out = []
    for rc in iter_route_contexts(app.routes):
        route = rc.original_route
        if isinstance(route, APIRoute):
            for method in sorted(set(rc.methods or ()) - {"HEAD"}):
                out.append((method, rc.path, route))
    return out


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path).replace("{kind}", "customers")


def test_every_route_declares_roles(splatform) -> None:  # type: ignore[no-untyped-def]
    routes = _routes(splatform.app)
    assert len(routes) > 30
    for method, path, route in routes:
        allows = _allow_of(route)
        assert len(allows) == 1, f"{method} {path} must declare its roles with exactly one Allow"
        if (method, path) in PUBLIC:
            assert allows[0].roles is None, f"{method} {path} should be public"
        else:
            assert allows[0].roles or len(allows[0].reason) > 20, \
                f"{method} {path} is public: add it to PUBLIC or give Allow.public a reason"


def test_anonymous_requests_are_refused_everywhere(splatform) -> None:  # type: ignore[no-untyped-def]
    anon = splatform.client()
    checked = 0
    for method, path, route in _routes(splatform.app):
        if _allow_of(route)[0].roles is None:
            continue
        r = anon.tc.request(method, _concrete(path))
        if path.startswith("/api/"):
            assert r.status_code == 401, (method, path, r.status_code)
        elif method == "GET":
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), \
                (method, path, r.status_code)
        else:
            assert r.status_code in (303, 401), (method, path, r.status_code)
        checked += 1
    assert checked > 25


def test_wrong_roles_are_refused_everywhere(splatform) -> None:  # type: ignore[no-untyped-def]
    clients = {role: splatform.as_role(role) for role in Role}
    checked = 0
    for method, path, route in _routes(splatform.app):
        allowed = _allow_of(route)[0].roles
        if allowed is None:
            continue
        for role in set(Role) - allowed:
            c = clients[role]
            r = c.tc.request(method, _concrete(path), headers={"X-CSRF-Token": c.csrf})
            assert r.status_code == 403, (role.value, method, path, r.status_code)
            checked += 1
    assert checked > 60


def test_every_state_changing_route_checks_csrf(splatform) -> None:  # type: ignore[no-untyped-def]
    clients = {role: splatform.as_role(role) for role in Role}
    anon = splatform.client()
    checked = 0
    for method, path, route in _routes(splatform.app):
        if method not in UNSAFE:
            continue
        allowed = _allow_of(route)[0].roles
        if allowed is None:
            c = anon
            c.tc.get("/login")
        else:
            c = clients[sorted(allowed)[0]]
        url = _concrete(path)
        for attempt in ({}, {"headers": {"X-CSRF-Token": "forged"}},
                        {"data": {"csrf_token": "forged"}}):
            r = c.tc.request(method, url, **attempt)  # type: ignore[arg-type]
            assert r.status_code == 403, (method, path, attempt, r.status_code)
            assert "CSRF" in r.text
        checked += 1
    assert checked >= 12


def test_csrf_token_of_another_session_is_refused(splatform) -> None:  # type: ignore[no-untyped-def]
    a = splatform.client("mall")
    b = splatform.client("mall")
    assert a.csrf != b.csrf
    r = a.tc.post("/owner/jobs", data={"k": "3", "csrf_token": b.csrf})
    assert r.status_code == 403


def test_login_form_csrf_is_bound_to_the_visitor(splatform) -> None:  # type: ignore[no-untyped-def]
    a, b = splatform.client(), splatform.client()
    token_a = re.search(r'name="csrf_token" value="([^"]+)"', a.tc.get("/login").text).group(1)
    b.tc.get("/login")
    r = b.tc.post("/login", data={"username": "mall", "password": "correct horse battery",
                                  "csrf_token": token_a})
    assert r.status_code == 403


def test_security_headers(splatform) -> None:  # type: ignore[no-untyped-def]
    r = splatform.client().tc.get("/login")
    for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
                   "Referrer-Policy"):
        assert header in r.headers
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store"
