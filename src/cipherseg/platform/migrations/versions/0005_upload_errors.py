"""Upload error reports as rows: the first problems of each column, counts of all.

* ``upload_errors``: one problem per row (the report pages through them without parsing);
* ``uploads.error_counts``: problems per column, every one counted.

Revision ID: 0005_upload_errors
Revises: 0004_campaign_outcomes
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_upload_errors"
down_revision = "0004_campaign_outcomes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_errors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("upload_id", sa.Integer(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("column", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=80), nullable=False),
        sa.Column("message", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(["upload_id"], ["uploads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_upload_errors_upload_id", "upload_errors", ["upload_id"])
    with op.batch_alter_table("uploads") as batch:
        batch.add_column(sa.Column("error_counts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("uploads") as batch:
        batch.drop_column("error_counts")
    op.drop_table("upload_errors")  # its index goes with it (MariaDB refuses to drop it first)
