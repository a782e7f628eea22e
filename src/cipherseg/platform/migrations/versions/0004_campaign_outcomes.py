"""Campaigns that say what happened, wait without churn and measure their effect.

* ``jobs.not_before``: a queued job is not claimed before this time — a campaign held by
  quiet hours (or scheduled for later) sleeps in its own job row until then, instead of
  handing the worker back and forth through new continuation jobs.
* ``msg_campaigns.scheduled_at``: a send planned for later.
* ``msg_campaign_segments.language`` / ``opt_out_text``: the template's language and the
  opt-out line in that language.
* ``msg_messages.arm``: ``treated`` or ``holdout`` (the random split for lift measurement);
  existing messages of customers that were sendable become ``treated``.
* ``msg_messages.attempt_base``: attempts made before an operator's retry.

Revision ID: 0004_campaign_outcomes
Revises: 0003_access
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004_campaign_outcomes"
down_revision = "0003_access"
branch_labels = None
depends_on = None

_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("not_before", sa.DateTime(), nullable=True))
    with op.batch_alter_table("msg_campaigns") as batch:
        batch.add_column(sa.Column("scheduled_at", _TS, nullable=True))
    with op.batch_alter_table("msg_campaign_segments") as batch:
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("opt_out_text", sa.String(length=160), nullable=True))
    with op.batch_alter_table("msg_messages") as batch:
        batch.add_column(sa.Column("attempt_base", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("arm", sa.String(length=8), nullable=True))
    op.execute("UPDATE msg_messages SET arm = 'treated' WHERE state <> 'skipped'")


def downgrade() -> None:
    op.execute("DELETE FROM msg_messages WHERE state = 'holdout'")
    with op.batch_alter_table("msg_messages") as batch:
        batch.drop_column("arm")
        batch.drop_column("attempt_base")
    with op.batch_alter_table("msg_campaign_segments") as batch:
        batch.drop_column("opt_out_text")
        batch.drop_column("language")
    with op.batch_alter_table("msg_campaigns") as batch:
        batch.drop_column("scheduled_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
