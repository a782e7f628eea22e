"""Fixtures for the platform tests: real databases, an app per test, logged-in clients.

``db_url`` is parametrised over SQLite, PostgreSQL and MariaDB: each test that uses it gets
a fresh, uniquely named database on the local server (PostgreSQL 127.0.0.1:5432 as
``postgres`` with trust auth; MariaDB 127.0.0.1:3306 as ``root``), dropped afterwards.
``CIPHERSEG_TEST_DATABASES=sqlite`` narrows the set (e.g. on a laptop without servers).
Tests that do not need every backend use ``sqlite_url``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cipherseg.platform.app import create_app, make_context, make_worker
from cipherseg.platform.core.config import Settings
from cipherseg.platform.db import make_engine
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.migrate import upgrade
from cipherseg.platform.models import Role
from db_servers import DB_KINDS, create_database, drop_database

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PASSWORD = "correct horse battery"
USERS = {"admin": Role.ADMIN, "mall": Role.OWNER, "shop": Role.MERCHANT,
         "centre": Role.CENTRE, "sms": Role.OPERATOR}
ROLE_USER = {role: name for name, role in USERS.items()}


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database on each backend (migrated by ``platform`` fixtures)."""
    kind = request.param
    url, name = create_database(kind, tmp_path, prefix="cs_test_", sqlite_file="test.db")
    try:
        yield url
    finally:
        drop_database(kind, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


def make_settings(tmp_path: Path, url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data", "database_url": url, "environment": "test",
        "worker_threads": 0, "centre_process": False, "min_segment_size": 50,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Platform:
    """A migrated database with one user per role, an app, and helpers."""

    ctx: PlatformContext
    app: object
    tmp_path: Path
    clients: list[Client] = field(default_factory=list)

    def client(self, username: str | None = None, *, https: bool = False) -> Client:
        base = "https://testserver" if https else "http://testserver"
        c = Client(TestClient(self.app, base_url=base, follow_redirects=False))  # type: ignore[arg-type]
        if username:
            c.login(username)
        self.clients.append(c)
        return c

    def as_role(self, role: Role) -> Client:
        return self.client(ROLE_USER[role])

    def run_jobs(self) -> list[int]:
        return make_worker(self.ctx, threads=1).run_until_empty()


class Client:
    """A TestClient that remembers its CSRF token and records every HTML body it saw."""

    def __init__(self, tc: TestClient) -> None:
        self.tc = tc
        self.csrf = ""
        self.pages: list[str] = []

    def _seen(self, response):  # type: ignore[no-untyped-def]
        ctype = response.headers.get("content-type", "")
        if ctype.startswith(("text/", "application/json")):
            self.pages.append(response.text)
            m = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
            if m and "cipherseg_session" in self.tc.cookies:
                self.csrf = m.group(1)
        return response

    def login(self, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
        page = self.tc.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = self.tc.post("/login", data={"username": username, "password": password,
                                         "csrf_token": token})
        if r.status_code == 303:
            me = self.tc.get("/api/v1/me")
            self.csrf = me.json()["csrf_token"]
        return r

    def get(self, url: str, **kw):  # type: ignore[no-untyped-def]
        return self._seen(self.tc.get(url, **kw))

    def post(self, url: str, data: dict | None = None, *, csrf: bool = True, **kw):  # type: ignore[no-untyped-def,type-arg]
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf)
        return self._seen(self.tc.post(url, data=data, **kw))

    def api(self, method: str, url: str, *, csrf: bool = True, **kw):  # type: ignore[no-untyped-def]
        headers = dict(kw.pop("headers", {}) or {})
        if csrf and method.upper() not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = self.csrf
        return self._seen(self.tc.request(method, url, headers=headers, **kw))

    def upload(self, kind: str, name: str, content: bytes):  # type: ignore[no-untyped-def]
        ctype = "text/csv" if name.endswith(".csv") else \
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        return self.post("/owner/uploads", {"kind": kind}, files={"file": (name, content,
                                                                            ctype)})


_HASH: list[str] = []


def migrate_and_add_users(url: str) -> None:
    """Migrate and add one user per role (one Argon2 hash, computed once per session)."""
    from cipherseg.platform.db import make_sessionmaker
    from cipherseg.platform.models import User
    from cipherseg.platform.security import hash_password

    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    engine = make_engine(url)
    upgrade(engine)
    with make_sessionmaker(engine)() as s:
        s.add_all([User(username=name, password_hash=_HASH[0], role=role.value, active=True)
                   for name, role in USERS.items()])
        s.commit()
    engine.dispose()


def build_platform(tmp_path: Path, url: str, *, prepared: bool = False,
                   **overrides: object) -> Platform:
    settings = make_settings(tmp_path, url, **overrides)
    if not prepared:
        migrate_and_add_users(settings.resolved_database_url())
    ctx = make_context(settings)
    return Platform(ctx=ctx, app=create_app(context=ctx), tmp_path=tmp_path)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with the test users, copied by each SQLite test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate_and_add_users(f"sqlite:///{path}")
    return path


@pytest.fixture
def platform(db_url: str, tmp_path: Path) -> Iterator[Platform]:
    """The platform on each database backend."""
    p = build_platform(tmp_path, db_url)
    yield p
    p.ctx.engine.dispose()


@pytest.fixture
def splatform(sqlite_url: str, sqlite_template: Path, tmp_path: Path) -> Iterator[Platform]:
    """The platform on SQLite only (for tests whose logic does not depend on the backend)."""
    import shutil

    shutil.copyfile(sqlite_template, tmp_path / "test.db")
    p = build_platform(tmp_path, sqlite_url, prepared=True)
    yield p
    p.ctx.engine.dispose()
