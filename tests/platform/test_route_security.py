"""Every route declares the one permission it needs; every route × role is walked against the
stored permission matrix (the default one and an edited one); anonymous requests are
refused; every state-changing route checks the CSRF token. The routes are enumerated from
the app itself, so a new route without a declaration fails here."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute, iter_route_contexts

from cipherseg.platform.deps import Allow
from cipherseg.platform.models import Role, User
from cipherseg.platform.permissions import DEFAULT_MATRIX, PERMISSIONS, Permission
from cipherseg.platform.services.permissions import matrix, save_matrix

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
            assert allows[0].public_route, f"{method} {path} should be public"
        else:
            assert not allows[0].public_route or len(allows[0].reason) > 20, \
                f"{method} {path} is public: add it to PUBLIC or give Allow.public a reason"


def test_every_permission_guards_some_route(splatform) -> None:  # type: ignore[no-untyped-def]
    used = {_allow_of(route)[0].permission for _m, _p, route in _routes(splatform.app)}
    assert set(Permission) <= used


def test_anonymous_requests_are_refused_everywhere(splatform) -> None:  # type: ignore[no-untyped-def]
    anon = splatform.client()
    checked = 0
    for method, path, route in _routes(splatform.app):
        if _allow_of(route)[0].public_route:
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


def _walk(splatform, held: dict[Role, frozenset[Permission]]) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Every route × role: admitted exactly when the role holds the route's permission.

    State-changing requests are sent without a CSRF token, so nothing changes: a role that
    is admitted gets the CSRF refusal, one that is not gets the permission refusal first.
    """
    clients = {role: splatform.as_role(role) for role in Role}
    admitted = refused = 0
    for method, path, route in _routes(splatform.app):
        allow = _allow_of(route)[0]
        if allow.public_route:
            continue
        for role in Role:
            c = clients[role]
            r = c.tc.request(method, _concrete(path))
            what = (role.value, method, path, r.status_code, r.text[:200])
            if allow.admits(role, held[role]):
                if method in UNSAFE:
                    assert r.status_code == 403 and "CSRF" in r.text, what
                else:
                    assert r.status_code not in (401, 403), what
                    assert not r.headers.get("location", "").startswith("/login"), what
                admitted += 1
            else:
                assert r.status_code == 403 and "permission" in r.text, what
                refused += 1
    return admitted, refused


def test_every_route_and_role_follow_the_default_matrix(splatform) -> None:  # type: ignore[no-untyped-def]
    with splatform.ctx.sessions() as s:
        assert matrix(s) == DEFAULT_MATRIX
    admitted, refused = _walk(splatform, DEFAULT_MATRIX)
    assert admitted > 60 and refused > 200


def test_every_route_and_role_follow_an_edited_matrix(splatform) -> None:  # type: ignore[no-untyped-def]
    """Flip every cell the guard rails allow (users.manage stays with the administrator):
    each route now admits exactly the other eligible roles."""
    flipped = {role: frozenset(p for p, info in PERMISSIONS.items()
                               if role in info.eligible and (p not in DEFAULT_MATRIX[role]
                                                             or p == Permission.USERS_MANAGE))
               for role in Role}
    assert flipped != DEFAULT_MATRIX
    with splatform.ctx.sessions() as s:
        admin = s.query(User).filter_by(username="admin").one()
        save_matrix(s, admin, flipped)
        assert matrix(s) == flipped
    admitted, refused = _walk(splatform, flipped)
    assert admitted > 15 and refused > 200


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
