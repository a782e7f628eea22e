"""Alembic migrations shipped inside the package (``cipherseg db upgrade``).

>>> from cipherseg.platform.db import make_engine
>>> engine = make_engine("sqlite://")
>>> upgrade(engine)
>>> current_revision(engine) == head_revision()
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from cipherseg.errors import ParameterError

SCRIPT_LOCATION = "cipherseg.platform:migrations"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _migrate(engine: Engine, step: Callable[[Config], None], vault: Any = None) -> None:
    """Run ``step`` in one transaction.

    SQLite alters a table by copying it and dropping the original; with foreign keys on,
    that ``DROP TABLE`` would delete (cascade) or refuse the rows referring to it, so the
    migration runs with foreign keys off — the pragma only works outside a transaction —
    and checks every reference before committing.
    """
    cfg = alembic_config()
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                cfg.attributes["vault"] = vault
                step(cfg)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise ParameterError(f"the migration left {len(broken)} broken "
                                             f"references (first: {tuple(broken[0])}); "
                                             "nothing was changed")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def upgrade(engine: Engine, revision: str = "head", *, vault: Any = None) -> None:
    """Bring the database schema of ``engine`` up to ``revision``. ``vault`` (the platform's
    :class:`~cipherseg.pii.vault.PiiVault`, or a function returning it when first needed) is
    needed by migrations that re-encode existing rows (0006: purchases encrypted at rest)."""
    _migrate(engine, lambda cfg: command.upgrade(cfg, revision), vault)


def downgrade(engine: Engine, revision: str, *, vault: Any = None) -> None:
    """Take the schema back to ``revision`` (``"base"`` drops every table)."""
    _migrate(engine, lambda cfg: command.downgrade(cfg, revision), vault)


def head_revision() -> str:
    """The newest revision shipped with this cipherseg."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head or ""


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
