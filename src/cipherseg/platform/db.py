"""Database engines and sessions for SQLite (default), PostgreSQL (psycopg) and MariaDB.

SQLite gets WAL journaling, foreign keys and a busy timeout so the web app and the worker can
share the file. PostgreSQL URLs are rewritten to the psycopg 3 driver and MySQL/MariaDB URLs
to PyMySQL when no driver is named.

>>> normalise_url("postgresql://u@h/db")
'postgresql+psycopg://u@h/db'
>>> normalise_url("mariadb://root@127.0.0.1/cs")
'mysql+pymysql://root@127.0.0.1/cs?charset=utf8mb4'
>>> e = make_engine("sqlite://")
>>> e.dialect.name
'sqlite'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cipherseg.errors import ParameterError

_SQLITE_BUSY_MS = 30_000


def normalise_url(url: str) -> str:
    """Choose the project's drivers for URLs that name none."""
    u = make_url(url)
    backend = u.get_backend_name()
    driver = u.get_driver_name() if "+" in u.drivername else None
    if backend == "postgresql" and driver in (None, "psycopg"):
        u = u.set(drivername="postgresql+psycopg")
    elif backend in ("mysql", "mariadb") and driver in (None, "pymysql"):
        u = u.set(drivername="mysql+pymysql")
        if "charset" not in u.query:
            u = u.update_query_dict({"charset": "utf8mb4"})
    elif backend not in ("sqlite", "postgresql", "mysql", "mariadb"):
        raise ParameterError(f"unsupported database {backend!r}; use sqlite, postgresql or "
                             "mariadb/mysql in CIPHERSEG_DATABASE_URL")
    return u.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings each backend needs."""
    url = normalise_url(url)
    u = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if u.get_backend_name() == "sqlite":
        if u.database in (None, "", ":memory:"):
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            # As many connections as the server has request threads (40), so a request never
            # waits for a connection while others wait for SQLite's write lock.
            kwargs.update(connect_args={"check_same_thread": False, "timeout": 30},
                          pool_size=20, max_overflow=30)
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=30, pool_recycle=1800)
    engine = create_engine(url, **kwargs)
    if u.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
