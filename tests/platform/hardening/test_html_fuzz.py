"""Hypothesis over every HTML route (the JSON API has schemathesis: test_api_fuzz.py), as
each role and anonymously: query strings, path parameters and form fields from hostile
values (huge and negative numbers, long and odd text). A route may refuse (4xx) but never
answers 5xx (issue 16, finding 11 and its kind)."""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cipherseg.platform.models import Role
from hardening_support import released_segmentation

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("CIPHERSEG_FUZZ_EXAMPLES", "6"))
#: Routes whose side effects would end the fuzzing session itself.
SKIP = {("POST", "/logout")}

VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "0", "1", "-1", "2", "1e308", "NaN", "inf", "9" * 40, "yes", "no",
                     "customers", "transactions", "csv", "xlsx", "ckks", "../../etc/passwd",
                     "%00", "{{7*7}}", "<script>", "'; drop table users;--"]),
    st.text(max_size=300),
)


def _html_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    out = []
    for rc in iter_route_contexts(app.routes):
        route = rc.original_route
        if not isinstance(route, APIRoute) or rc.path.startswith("/api/"):
            continue
        for method in sorted(set(rc.methods or ()) - {"HEAD"}):
            if (method, rc.path) not in SKIP:
                out.append((method, rc.path, route))
    return out


@pytest.fixture
def fuzz_target(splatform):  # type: ignore[no-untyped-def]
    released_segmentation(splatform, n=60)
    clients = {role: splatform.as_role(role) for role in Role}
    clients[None] = splatform.client()  # type: ignore[index]
    return splatform, clients


def _request(client: Any, method: str, path: str, route: APIRoute, data: Any) -> Any:
    params = {p.name: data.draw(VALUES) for p in route.dependant.query_params}
    url = re.sub(r"\{[^}]+\}", lambda _m: quote(data.draw(VALUES), safe="") or "1", path)
    if method == "GET":
        return client.tc.get(url, params=params)
    form: dict[str, Any] = {p.alias: data.draw(VALUES) for p in route.dependant.body_params
                            if p.alias != "file"}
    form["csrf_token"] = client.csrf
    files = ({"file": ("x.csv", data.draw(st.binary(max_size=200)), "text/csv")}
             if any(p.alias == "file" for p in route.dependant.body_params) else None)
    return client.tc.post(url, params=params, data=form, files=files)


def test_no_html_route_answers_5xx(fuzz_target) -> None:  # type: ignore[no-untyped-def]
    platform, clients = fuzz_target
    routes = _html_routes(platform.app)
    assert len(routes) > 40

    @settings(max_examples=EXAMPLES * len(routes), deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data: Any) -> None:
        method, path, route = data.draw(st.sampled_from(routes))
        role = data.draw(st.sampled_from([*Role, None]))
        response = _request(clients[role], method, path, route, data)
        assert response.status_code < 500, (method, path, role, response.status_code,
                                            response.text[:300])

    run()
