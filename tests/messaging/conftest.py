"""Fixtures for the messaging tests: real databases, a PII vault, synthetic customers, Kannel.

``any_db`` is parametrised over SQLite, PostgreSQL (127.0.0.1:5432, ``postgres``, trust)
and MariaDB (127.0.0.1:3306, ``root``); each test gets a fresh database, dropped afterwards.
``CIPHERSEG_TEST_DATABASES=sqlite`` narrows the set. Kannel tests start bearerbox + smsbox
on free loopback ports (``kannel`` fixture) and stop them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from cipherseg.messaging import (
    Recipient,
    SqlMessageStore,
    StaticRecipients,
    seal_recipient,
    standalone_tables,
)
from cipherseg.pii import PiiKeyring, PiiVault
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness, kannel_installed
from db_servers import DB_KINDS, create_database, drop_database

#: Noon in Shanghai on a Monday: outside the default quiet hours.
NOON_SHANGHAI = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)

requires_kannel = pytest.mark.skipif(not kannel_installed(),
                                     reason="Kannel not installed (scripts/system-deps.sh)")


def sqlite_engine(path: Path) -> Engine:
    """A file SQLite engine shared by threads and processes (WAL, busy timeout)."""
    from sqlalchemy import event

    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30,
                                                            "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: object, _rec: object) -> None:
        cur = conn.cursor()  # type: ignore[attr-defined]
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


@pytest.fixture(scope="session", params=DB_KINDS)
def any_db(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A database engine on each backend (one database per backend and test session; use
    ``db_store`` for a store whose tables start empty)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"db-{kind}")
    url, name = create_database(kind, tmp, prefix="cs_msg_", sqlite_file="messaging.db")
    engine = sqlite_engine(tmp / "messaging.db") if kind == "sqlite" else \
        create_engine(url, pool_pre_ping=True)
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(kind, name)


@pytest.fixture
def db_store(any_db: Engine) -> SqlMessageStore:
    """A store on each backend whose messaging tables are empty."""
    s = SqlMessageStore(any_db, standalone_tables())
    s.create_schema()
    t = s.t
    with any_db.begin() as conn:
        for table in (t.outbox, t.reports, t.messages, t.segments, t.campaigns,
                      t.suppressions):
            conn.execute(table.delete())
    return s


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "messaging.db"


@pytest.fixture
def store(db_path: Path) -> SqlMessageStore:
    """A store on a SQLite file (the platform's default backend)."""
    s = SqlMessageStore(sqlite_engine(db_path), standalone_tables())
    s.create_schema()
    return s


@pytest.fixture
def vault() -> PiiVault:
    return PiiVault(PiiKeyring.generate())


def phone_of(i: int) -> str:
    """A valid, deterministic Chinese mobile number for customer ``i``."""
    return f"+86139{i:08d}"


def make_people(vault: PiiVault, n: int, *, no_consent: frozenset[int] = frozenset(),
                names: bool = True, timezone: str | None = None) -> list[Recipient]:
    """``n`` synthetic customers c0..c{n-1} with sealed numbers."""
    first = ["Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang"]
    return [seal_recipient(vault, f"c{i}", phone_of(i), consent=i not in no_consent,
                           region="CN", timezone=timezone,
                           first_name=first[i % len(first)] if names else None)
            for i in range(n)]


@pytest.fixture(name="make_people")
def _make_people(vault: PiiVault) -> Callable[..., list[Recipient]]:
    """``people(n, no_consent=…, timezone=…)``: synthetic customers sealed with ``vault``."""
    def make(n: int, **kw: object) -> list[Recipient]:
        return make_people(vault, n, **kw)  # type: ignore[arg-type]
    return make


@pytest.fixture
def people_factory(vault: PiiVault) -> Callable[..., StaticRecipients]:
    def make(n: int, **kw: object) -> StaticRecipients:
        return StaticRecipients(make_people(vault, n, **kw))  # type: ignore[arg-type]
    return make


@pytest.fixture
def kannel(tmp_path: Path) -> Iterator[Callable[..., KannelHarness]]:
    """Start Kannel harnesses on demand; every one started is stopped afterwards."""
    if not kannel_installed():
        pytest.skip("Kannel not installed (run scripts/system-deps.sh)")
    started: list[KannelHarness] = []

    def start(**kw: object) -> KannelHarness:
        h = KannelHarness(tmp_path / f"kannel{len(started)}", **kw)  # type: ignore[arg-type]
        started.append(h)
        return h.start()

    try:
        yield start
    finally:
        for h in started:
            h.stop()


@pytest.fixture
def handset() -> Iterator[Callable[[int], FakeSmscClient]]:
    """Connect fake-SMSC clients (the phones); closed afterwards."""
    clients: list[FakeSmscClient] = []

    def connect(port: int) -> FakeSmscClient:
        c = FakeSmscClient(port).connect()
        clients.append(c)
        return c

    try:
        yield connect
    finally:
        for c in clients:
            c.close()
