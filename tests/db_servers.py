"""Fresh databases on the local servers for tests that must run against real backends.

PostgreSQL 127.0.0.1:5432 as ``postgres`` (trust auth), MariaDB 127.0.0.1:3306 as ``root``;
``CIPHERSEG_TEST_DATABASES=sqlite`` narrows the set (e.g. on a laptop without servers).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

DB_KINDS = [k.strip() for k in os.environ.get("CIPHERSEG_TEST_DATABASES",
                                              "sqlite,postgresql,mariadb").split(",") if k.strip()]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def create_database(kind: str, directory: Path, *, prefix: str,
                    sqlite_file: str) -> tuple[str, str | None]:
    """A new, uniquely named database of ``kind``: (SQLAlchemy URL, name to drop)."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        return f"sqlite:///{directory / sqlite_file}", None
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name
    if kind == "mariadb":
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root")
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                            "COLLATE utf8mb4_unicode_ci")
        finally:
            conn.close()
        return f"mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4", name
    raise ValueError(f"unknown database kind {kind}")


def drop_database(kind: str, name: str | None) -> None:
    """Drop what :func:`create_database` made (SQLite files go with their directory)."""
    if kind == "postgresql":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    elif kind == "mariadb":
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root")
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            conn.close()
