"""Purchase records encrypted at rest.

``transactions.date``, ``amount`` and ``category`` are replaced by ``payload_ct``: the three
values in one AES-256-GCM ciphertext of the PII vault (:mod:`cipherseg.platform.purchases`).
Existing rows are encrypted in batches; downgrading decrypts them back into the three
columns. Both directions need the keyring when the table has rows: ``cipherseg db upgrade``
passes the platform's (``migrate.upgrade(engine, vault=...)``).

Revision ID: 0006_purchases_at_rest
Revises: 0005_upload_errors
Create Date: 2026-12-04
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision = "0006_purchases_at_rest"
down_revision = "0005_upload_errors"
branch_labels = None
depends_on = None

_BATCH = 2000
_TX = sa.table("transactions", sa.column("id", sa.BigInteger()),
               sa.column("owner_id", sa.Integer()), sa.column("external_id", sa.String(64)),
               sa.column("date", sa.Date()), sa.column("amount", sa.Numeric(14, 2)),
               sa.column("category", sa.String(64)),
               sa.column("payload_ct", sa.LargeBinary(512)))


def _vault(conn: sa.Connection) -> Any:
    if conn.execute(sa.select(_TX.c.id).limit(1)).first() is None:
        return None
    vault = context.config.attributes.get("vault")
    if callable(vault) and not hasattr(vault, "encrypt"):
        vault = vault()  # a factory: the keyring is loaded only when rows need it
    if vault is None:
        from cipherseg.errors import KeyCustodyError

        raise KeyCustodyError("the transactions table has rows to re-encode and this migration "
                              "needs the PII keyring: run `cipherseg db upgrade` (it loads the "
                              "platform's keyring)")
    return vault


def _batches(conn: sa.Connection, *columns: Any) -> Any:
    last = 0
    while True:
        rows = conn.execute(sa.select(_TX.c.id, *columns).where(_TX.c.id > last)
                            .order_by(_TX.c.id).limit(_BATCH)).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def upgrade() -> None:
    from cipherseg.platform.purchases import seal

    conn = op.get_bind()
    vault = _vault(conn)  # before any DDL: MySQL/MariaDB commit DDL at once
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("payload_ct", sa.LargeBinary(length=512), nullable=True))
    if vault is not None:
        for rows in _batches(conn, _TX.c.owner_id, _TX.c.external_id, _TX.c.date,
                             _TX.c.amount, _TX.c.category):
            conn.execute(sa.update(_TX).where(_TX.c.id == sa.bindparam("b_id")).values(
                payload_ct=sa.bindparam("b_ct")),
                [{"b_id": rid, "b_ct": seal(vault, owner, ext, day, Decimal(amount), cat)}
                 for rid, owner, ext, day, amount, cat in rows])
    with op.batch_alter_table("transactions") as batch:
        batch.alter_column("payload_ct", existing_type=sa.LargeBinary(length=512),
                           nullable=False)
        batch.drop_column("category")
        batch.drop_column("amount")
        batch.drop_column("date")


def downgrade() -> None:
    from cipherseg.platform.purchases import unseal

    conn = op.get_bind()
    vault = _vault(conn)  # before any DDL: MySQL/MariaDB commit DDL at once
    with op.batch_alter_table("transactions") as batch:
        batch.add_column(sa.Column("date", sa.Date(), nullable=True))
        batch.add_column(sa.Column("amount", sa.Numeric(precision=14, scale=2), nullable=True))
        batch.add_column(sa.Column("category", sa.String(length=64), nullable=True))
    if vault is not None:
        for rows in _batches(conn, _TX.c.owner_id, _TX.c.external_id, _TX.c.payload_ct):
            values = []
            for rid, owner, ext, blob in rows:
                day, amount, cat = unseal(vault, owner, ext, blob)
                values.append({"b_id": rid, "b_date": day, "b_cat": cat,
                               "b_amount": Decimal(str(amount)).quantize(Decimal("0.01"))})
            conn.execute(sa.update(_TX).where(_TX.c.id == sa.bindparam("b_id")).values(
                date=sa.bindparam("b_date"), amount=sa.bindparam("b_amount"),
                category=sa.bindparam("b_cat")), values)
    with op.batch_alter_table("transactions") as batch:
        batch.alter_column("date", existing_type=sa.Date(), nullable=False)
        batch.alter_column("amount", existing_type=sa.Numeric(precision=14, scale=2),
                           nullable=False)
        batch.drop_column("payload_ct")
