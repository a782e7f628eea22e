"""Numbers per kind of object: an owner's first segmentation is segmentation #1, whatever
else the platform ran before (uploads, imports, other owners' jobs, campaign sends).

A number comes from the ``counters`` row of its scope, created or incremented by one upsert
inside the caller's transaction: the row lock serialises concurrent allocations in one scope
on PostgreSQL and MariaDB (SQLite serialises writers anyway), so two requests never get the
same number (the row stays locked until the caller commits).

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

from sqlalchemy import select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

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
    """The next number in ``scope`` (1, 2, ...); part of the caller's transaction.

    One upsert statement per backend: it creates the counter at 1 or increments it under
    the row's exclusive lock (an ``INSERT IGNORE`` then ``UPDATE`` pair deadlocks on
    MariaDB: both transactions take the duplicate key's shared lock first).
    """
    dialect = session.get_bind().dialect.name
    values = {"scope": scope, "value": 1}
    if dialect in ("postgresql", "sqlite"):
        insert_ = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert_(Counter).values(values)
        number = session.scalar(stmt.on_conflict_do_update(
            index_elements=[Counter.scope], set_={"value": Counter.value + 1})
            .returning(Counter.value))
    else:
        stmt_my = mysql_insert(Counter).values(values)
        session.execute(stmt_my.on_duplicate_key_update(value=Counter.value + 1))
        number = session.scalar(select(Counter.value).where(Counter.scope == scope))
    assert number is not None
    return int(number)
