"""The packaged migrations build exactly the models' schema, on every database, and go down
and up again."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cipherseg.platform.db import make_engine
from cipherseg.platform.migrate import current_revision, downgrade, head_revision, upgrade
from cipherseg.platform.models import Base


def test_migrations_match_the_models_and_reverse(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], diff
        downgrade(engine, "base")
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
