"""Customers: the right to erasure, and the tables it deletes from (every table that
references ``customers.id``; a new one must cascade: docs/platform.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cipherseg.platform import audit
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Base, Customer, User


def customer_tables() -> list[tuple[Any, Any]]:
    """Every (table, column) that references ``customers.id`` (erasure deletes from each)."""
    out = []
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == "customers" and fk.column.name == "id":
                out.append((table, fk.parent))
    return out


def erase_customer(ctx: PlatformContext, session: Session, owner: User, customer_id: int, *,
                   ip: str | None = None) -> bool:
    """Right to erasure: delete the customer's PII and every row about them; commits."""
    cust = session.scalar(select(Customer).where(Customer.id == customer_id,
                                                 Customer.owner_id == owner.id))
    if cust is None:
        return False
    pseudonym = cust.pseudonym
    removed: dict[str, int] = {}
    for table, column in reversed(customer_tables()):
        res = session.execute(delete(table).where(column == cust.id))
        removed[table.name] = res.rowcount  # type: ignore[attr-defined]
    session.execute(delete(Customer).where(Customer.id == cust.id))
    audit.record(session, "erasure", actor=owner, object_type="customer",
                 object_id=pseudonym[:16], ip=ip, detail={"rows_removed": removed},
                 region=ctx.settings.default_region)
    session.commit()
    return True
