"""Schemathesis fuzzes the JSON API from the app's own OpenAPI schema, logged in as each role:
no 5xx, responses conform to the schema (status codes, content types, bodies)."""

from __future__ import annotations

import os
import warnings

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import checks as st_checks
from sqlalchemy import select

from cipherseg.platform.models import Job, ReleaseGrant, Role, Segment, User
from cipherseg.platform.numbering import job_scope, next_number
from cipherseg.platform.uploads import Importer

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: F401  (quiet import)

pytestmark = pytest.mark.slow
#: Generated requests per operation (each sent once per role); raise it for a deeper run.
EXAMPLES = int(os.environ.get("CIPHERSEG_FUZZ_EXAMPLES", "6"))
ROLE_USER = {Role.ADMIN: "admin", Role.OWNER: "mall", Role.MERCHANT: "shop",
             Role.CENTRE: "centre", Role.OPERATOR: "sms"}


@pytest.fixture(scope="module")
def fuzz_platform(tmp_path_factory, sqlite_template):  # type: ignore[no-untyped-def]
    """One platform for the whole module, with customers and a released segmentation."""
    import shutil

    from cipherseg.platform.app import create_app, make_context
    from cipherseg.platform.core.config import Settings

    tmp = tmp_path_factory.mktemp("fuzz")
    shutil.copyfile(sqlite_template, tmp / "test.db")
    ctx = make_context(Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp/'test.db'}",
                                environment="test", worker_threads=0))
    with ctx.sessions() as s:
        owner = s.query(User).filter_by(username="mall").one()
        f = tmp / "c.csv"
        f.write_text("customer_id,phone,consent\n" + "".join(
            f"C{i},1380013{i:04d},yes\n" for i in range(60)))
        with Importer(s, ctx.vault, owner.id, "customers", f, region="CN") as imp:
            imp.validate()
            imp.apply()
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner.id, created_by=owner.id,
                  number=next_number(s, job_scope("segmentation", owner.id)),
                  params={"k": 2, "features": ["recency"], "scheme": "ckks"},
                  result={"n_customers": 60, "n_iter": 3})
        s.add(job)
        s.flush()
        s.add(ReleaseGrant(job_id=job.id, granted_by=owner.id, merchant_id=s.scalars(
            select(User.id).where(User.username == "shop")).one()))
        s.add_all([Segment(job_id=job.id, position=0, name="Loyal", size=55,
                           centroid={"recency_days": 3.0, "frequency": 9.0, "monetary": 99.0}),
                   Segment(job_id=job.id, position=1, name="Lapsed", size=5,
                           centroid={"recency_days": 300.0, "frequency": 1.0,
                                     "monetary": 10.0})])
        s.commit()
    app = create_app(context=ctx)
    return app, ctx


@pytest.fixture(scope="module")
def api_schema(fuzz_platform):  # type: ignore[no-untyped-def]
    app, _ctx = fuzz_platform
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    return schema


@pytest.fixture(scope="module")
def role_headers(fuzz_platform):  # type: ignore[no-untyped-def]
    """Cookie + CSRF headers of one session per role."""
    import re

    app, _ctx = fuzz_platform
    out = {}
    for role, name in ROLE_USER.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient

        tc = TestClient(app, follow_redirects=False)
        page = tc.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = tc.post("/login", data={"username": name, "password": "correct horse battery",
                                    "csrf_token": token})
        assert r.status_code == 303
        csrf = tc.get("/api/v1/me").json()["csrf_token"]
        cookie = "; ".join(f"{k}={v}" for k, v in tc.cookies.items())
        out[role] = {"Cookie": cookie, "X-CSRF-Token": csrf}
    return out


EXCLUDED = [st_checks.negative_data_rejection, st_checks.positive_data_acceptance,
            st_checks.missing_required_header, st_checks.unsupported_method,
            st_checks.ignored_auth]


def test_api_never_fails_and_keeps_its_schema(api_schema, role_headers) -> None:  # type: ignore[no-untyped-def]
    """For every operation, generated requests are sent once per role (allowed or not)."""
    # replacing the permission matrix would take the other roles' permissions away for the
    # rest of the run: tests/platform/test_access.py checks that operation instead
    operations = [op for op in (r.ok() for r in api_schema.get_all_operations())
                  if (op.method.upper(), op.path) != ("PUT", "/api/v1/permissions")]
    assert len(operations) >= 15
    calls = {"n": 0}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data) -> None:  # type: ignore[no-untyped-def]
        for op in operations:
            case = data.draw(op.as_strategy(), label=op.label)
            if op.path in ("/api/v1/users/{user_id}", "/api/v1/users/{user_id}/reset-password"):
                # never let the fuzzer disable (or reset) the accounts whose sessions it uses
                case.path_parameters = {"user_id": 999_999}
            elif case.path_parameters and data.draw(st.booleans(), label="existing id"):
                # half of the time aim at rows that exist (ids 1-3), not only random ids
                case.path_parameters = {k: data.draw(st.integers(1, 3), label=k)
                                        for k in case.path_parameters}
            for role in Role:
                case.call_and_validate(headers=role_headers[role], excluded_checks=EXCLUDED)
                calls["n"] += 1

    run()
    assert calls["n"] >= EXAMPLES * len(operations) * len(Role)

