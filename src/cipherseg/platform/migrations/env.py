"""Alembic environment: runs against the connection or URL the caller configured.

Called through :func:`cipherseg.platform.migrate.upgrade`; never reads settings itself.
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config
from sqlalchemy import Connection

from cipherseg.platform.db import make_engine
from cipherseg.platform.models import Base

target_metadata = Base.metadata
config: Config | None
try:
    config = context.config
except AttributeError:  # imported outside an Alembic run (e.g. pytest --doctest-modules)
    config = None


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    assert config is not None
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def run_migrations_offline() -> None:
    assert config is not None
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if config is not None:
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
