"""Numbers per kind of object: an owner's first segmentation is segmentation #1, whatever
else the platform ran before (uploads, imports, other owners' jobs, campaign sends).

A number comes from the ``counters`` row of its scope, incremented inside the caller's
transaction: the row lock serialises concurrent allocations in one scope on PostgreSQL and
MariaDB (SQLite serialises writers anyway), and a missing row is created with an
``INSERT`` that ignores a concurrent twin, so two requests never get the same number.

>>> from cipherseg.platform.db import make_engine, make_sessionmaker
>>> from cipherseg.platform.migrate import upgrade
>>> engine = make_engine("sqlite://"); upgrade(engine)
>>> with make_sessionmaker(engine)() as s:
...     [next_number(s, "segmentation:1") for _ in range(3)] + [next_number(s, "upload:1")]
[1, 2, 3, 1]
>>> job_scope("segmentation", 7), job_scope("joint", 7)
('segmentation:7', 'joint')
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cipherseg.platform.models import Counter

#: Job kinds numbered across owners: their pages are shared by several owners.
SHARED_NUMBERING = frozenset({"joint"})


def job_scope(kind: str, owner_id: int) -> str:
    """The numbering scope of a job: per owner and kind, or per kind for shared kinds."""
    return kind if kind in SHARED_NUMBERING else f"{kind}:{owner_id}"


def upload_scope(owner_id: int) -> str:
    """The numbering scope of an owner's uploads."""
    return f"upload:{owner_id}"


def next_number(session: Session, scope: str) -> int:
    """The next number in ``scope`` (1, 2, ...); part of the caller's transaction."""
    dialect = session.get_bind().dialect.name
    values = {"scope": scope, "value": 0}
    create: Executable
    if dialect == "postgresql":
        create = pg_insert(Counter).values(values).on_conflict_do_nothing()
    elif dialect == "sqlite":
        create = sqlite_insert(Counter).values(values).on_conflict_do_nothing()
    else:
        create = insert(Counter).values(values).prefix_with("IGNORE")
    session.execute(create)
    session.execute(update(Counter).where(Counter.scope == scope)
                    .values(value=Counter.value + 1)
                    .execution_options(synchronize_session=False))
    number = session.scalar(select(Counter.value).where(Counter.scope == scope))
    assert number is not None
    return int(number)
