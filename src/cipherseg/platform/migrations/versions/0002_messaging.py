"""Messaging: campaigns, per-segment templates, messages (one per campaign and customer),
delivery reports, opt-outs and suppressions, and the outbox (tables of cipherseg.messaging).

``msg_messages.customer_id`` references ``customers`` with ON DELETE CASCADE, and the
reports and outbox rows cascade from their message, so erasing a customer erases their
messages everywhere. No column holds a phone number (``phone_key`` is a keyed pseudonym;
the outbox keeps the masked form).

Revision ID: 0002_messaging
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002_messaging"
down_revision = "0001"
branch_labels = None
depends_on = None

#: UTC timestamps; microseconds kept on MariaDB/MySQL.
_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "msg_campaigns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("shop_name", sa.String(length=128), nullable=False),
        sa.Column("sender", sa.String(length=32), nullable=True),
        sa.Column("opt_out_text", sa.String(length=160), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=True),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("approved_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_campaigns")),
    )
    op.create_table(
        "msg_suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=48), nullable=False),
        sa.Column("note", sa.String(length=255), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_suppressions")),
        sa.UniqueConstraint("phone_key", "kind", name="uq_msg_suppressions_phone_kind"),
    )
    op.create_table(
        "msg_campaign_segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("segment_key", sa.String(length=64), nullable=False),
        sa.Column("segment_name", sa.String(length=128), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["msg_campaigns.id"],
            name=op.f("fk_msg_campaign_segments_campaign_id_msg_campaigns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_campaign_segments")),
        sa.UniqueConstraint(
            "campaign_id", "segment_key", name="uq_msg_campaign_segments_campaign_segment"
        ),
    )
    with op.batch_alter_table("msg_campaign_segments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_msg_campaign_segments_campaign_id"), ["campaign_id"], unique=False
        )

    op.create_table(
        "msg_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("segment_key", sa.String(length=64), nullable=False),
        sa.Column("customer_ref", sa.String(length=64), nullable=False),
        sa.Column(
            "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("idem_key", sa.String(length=64), nullable=False),
        sa.Column("phone_key", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("attempt_at", _TS, nullable=True),
        sa.Column("sent_at", _TS, nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("encoding", sa.String(length=8), nullable=True),
        sa.Column("parts", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["msg_campaigns.id"],
            name=op.f("fk_msg_messages_campaign_id_msg_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_msg_messages_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_messages")),
        sa.UniqueConstraint("idem_key", name=op.f("uq_msg_messages_idem_key")),
    )
    with op.batch_alter_table("msg_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_msg_messages_campaign_state", ["campaign_id", "state"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_msg_messages_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index("ix_msg_messages_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_msg_messages_phone_sent", ["phone_key", "sent_at"], unique=False)

    op.create_table(
        "msg_delivery_reports",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["msg_messages.id"],
            name=op.f("fk_msg_delivery_reports_message_id_msg_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_delivery_reports")),
    )
    with op.batch_alter_table("msg_delivery_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_msg_delivery_reports_message_id"), ["message_id"], unique=False
        )

    op.create_table(
        "msg_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("to_masked", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=8), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["msg_messages.id"],
            name=op.f("fk_msg_outbox_message_id_msg_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_msg_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_msg_outbox_message_id")),
    )


def downgrade() -> None:
    # Indexes go with their tables (MariaDB refuses to drop one a foreign key still uses).
    for table in ("msg_outbox", "msg_delivery_reports", "msg_messages",
                  "msg_campaign_segments", "msg_suppressions", "msg_campaigns"):
        op.drop_table(table)
