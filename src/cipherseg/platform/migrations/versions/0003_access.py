"""Access: releases become grants to named merchants, segmentation requests, the permission
matrix, forced password changes, and numbering per kind of object.

* ``release_grants``: one row per (segmentation, merchant). **Existing releases** (jobs with
  ``published`` set) become grants to *every* merchant account that exists when the
  migration runs (active or disabled), granted by the job's owner at the job's finishing
  time — exactly who could see them before. ``jobs.published`` is dropped.
* ``segmentation_requests``: a merchant's request to an owner.
* ``role_permissions``: the permission matrix, seeded with the defaults (which reproduce the
  fixed roles of earlier versions).
* ``users.must_change_password`` and ``users.password_expires_at``: temporary passwords.
* ``jobs.number`` and ``uploads.number``: each kind of object has its own numbering (per
  owner for an owner's uploads, imports and segmentations; joint jobs per kind), numbered in
  creation order; ``counters`` holds the next numbers.

Downgrading sets ``jobs.published`` for every job with an active grant (the old model cannot
say to whom) and drops the rest.

Revision ID: 0003_access
Revises: 0002_messaging
Create Date: 2027-01-10
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003_access"
down_revision = "0002_messaging"
branch_labels = None
depends_on = None

_TS = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

#: The default matrix as it was when this migration was written (frozen here on purpose:
#: later changes to the defaults in code must not change what this migration seeds).
DEFAULT_MATRIX = {
    "admin": ("optout.lift", "audit.read", "users.manage"),
    "owner": ("data.upload", "customers.read", "customers.erase", "segment.run",
              "segment.release", "joint.run", "request.decide"),
    "merchant": ("release.view", "request.create", "campaign.create"),
    "operator": ("audience.view", "campaign.approve", "optout.lift"),
    "centre": ("centre.schedule",),
}
#: Job kinds numbered per kind across owners (their pages are shared by several owners).
_SHARED_NUMBERING = {"joint"}


def _number_scope(kind: str, owner_id: int) -> str:
    return kind if kind in _SHARED_NUMBERING else f"{kind}:{owner_id}"


def upgrade() -> None:
    bind = op.get_bind()
    # plain ALTER TABLE ADD COLUMN on every backend (no table copy on SQLite)
    op.add_column("users", sa.Column("must_change_password", sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.add_column("users", sa.Column("password_expires_at", sa.DateTime(), nullable=True))

    role_permissions = op.create_table(
        "role_permissions",
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("permission", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("role", "permission", name=op.f("pk_role_permissions")),
    )
    op.bulk_insert(role_permissions, [{"role": role, "permission": perm}
                                      for role, perms in DEFAULT_MATRIX.items()
                                      for perm in perms])

    counters = op.create_table(
        "counters",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_counters")),
    )
    _number_existing_rows(bind, counters)

    op.create_table(
        "segmentation_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=500), nullable=False),
        sa.Column("k", sa.Integer(), nullable=True),
        sa.Column("window_from", sa.Date(), nullable=True),
        sa.Column("window_to", sa.Date(), nullable=True),
        sa.Column("window_days", sa.Integer(), nullable=True),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["decided_by"], ["users.id"],
                                name=op.f("fk_segmentation_requests_decided_by_users")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"],
                                name=op.f("fk_segmentation_requests_job_id_jobs"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["merchant_id"], ["users.id"],
                                name=op.f("fk_segmentation_requests_merchant_id_users")),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"],
                                name=op.f("fk_segmentation_requests_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segmentation_requests")),
    )
    with op.batch_alter_table("segmentation_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_segmentation_requests_merchant_id"),
                              ["merchant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_segmentation_requests_owner_id"), ["owner_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_segmentation_requests_status"), ["status"],
                              unique=False)

    grants = op.create_table(
        "release_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("merchant_id", sa.Integer(), nullable=False),
        sa.Column("granted_by", sa.Integer(), nullable=False),
        sa.Column("granted_at", _TS, nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("revoked_at", _TS, nullable=True),
        sa.Column("revoked_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["granted_by"], ["users.id"],
                                name=op.f("fk_release_grants_granted_by_users")),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"],
                                name=op.f("fk_release_grants_job_id_jobs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["merchant_id"], ["users.id"],
                                name=op.f("fk_release_grants_merchant_id_users")),
        sa.ForeignKeyConstraint(["request_id"], ["segmentation_requests.id"],
                                name=op.f("fk_release_grants_request_id_segmentation_requests"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["revoked_by"], ["users.id"],
                                name=op.f("fk_release_grants_revoked_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release_grants")),
        sa.UniqueConstraint("job_id", "merchant_id", name=op.f("uq_release_grants_job_id")),
    )
    with op.batch_alter_table("release_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_release_grants_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_release_grants_merchant_id"), ["merchant_id"],
                              unique=False)
    _published_to_grants(bind, grants)
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("published")


def _number_existing_rows(bind: sa.Connection, counters: sa.Table) -> None:
    """Number existing jobs and uploads in creation order, per scope; seed the counters."""
    meta = sa.MetaData()
    jobs = sa.Table("jobs", meta, sa.Column("id", sa.Integer), sa.Column("kind", sa.String),
                    sa.Column("owner_id", sa.Integer))
    uploads = sa.Table("uploads", meta, sa.Column("id", sa.Integer),
                       sa.Column("owner_id", sa.Integer))
    for table in ("jobs", "uploads"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("number", sa.Integer(), nullable=True))
    next_number: dict[str, int] = defaultdict(int)
    numbered: dict[str, list[tuple[int, int]]] = {"jobs": [], "uploads": []}
    for job_id, kind, owner_id in bind.execute(
            sa.select(jobs.c.id, jobs.c.kind, jobs.c.owner_id).order_by(jobs.c.id)):
        scope = _number_scope(kind, owner_id)
        next_number[scope] += 1
        numbered["jobs"].append((job_id, next_number[scope]))
    for upload_id, owner_id in bind.execute(
            sa.select(uploads.c.id, uploads.c.owner_id).order_by(uploads.c.id)):
        scope = f"upload:{owner_id}"
        next_number[scope] += 1
        numbered["uploads"].append((upload_id, next_number[scope]))
    for table_name, rows in numbered.items():
        numbers = sa.Table(table_name, sa.MetaData(), sa.Column("id", sa.Integer),
                           sa.Column("number", sa.Integer))
        for row_id, n in rows:
            bind.execute(sa.update(numbers).where(numbers.c.id == row_id).values(number=n))
    if next_number:
        op.bulk_insert(counters, [{"scope": s, "value": v} for s, v in next_number.items()])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("number", existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_jobs_kind"),
                                          ["kind", "owner_id", "number"])
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.alter_column("number", existing_type=sa.Integer(), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_uploads_owner_id"),
                                          ["owner_id", "number"])


def _published_to_grants(bind: sa.Connection, grants: sa.Table) -> None:
    """Every released job becomes a grant to every merchant account that exists now."""
    meta = sa.MetaData()
    jobs = sa.Table("jobs", meta, sa.Column("id", sa.Integer), sa.Column("owner_id", sa.Integer),
                    sa.Column("published", sa.Boolean), sa.Column("finished_at", sa.DateTime),
                    sa.Column("created_at", sa.DateTime))
    users = sa.Table("users", meta, sa.Column("id", sa.Integer), sa.Column("role", sa.String))
    merchants = [row[0] for row in bind.execute(
        sa.select(users.c.id).where(users.c.role == "merchant").order_by(users.c.id))]
    released = bind.execute(sa.select(jobs.c.id, jobs.c.owner_id, jobs.c.finished_at,
                                      jobs.c.created_at)
                            .where(jobs.c.published.is_(True)).order_by(jobs.c.id)).all()
    rows = [{"job_id": job_id, "merchant_id": merchant, "granted_by": owner_id,
             "granted_at": finished or created, "request_id": None, "revoked_at": None,
             "revoked_by": None}
            for job_id, owner_id, finished, created in released for merchant in merchants]
    if rows:
        op.bulk_insert(grants, rows)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    meta = sa.MetaData()
    jobs = sa.Table("jobs", meta, sa.Column("id", sa.Integer),
                    sa.Column("published", sa.Boolean))
    grants = sa.Table("release_grants", meta, sa.Column("job_id", sa.Integer),
                      sa.Column("revoked_at", sa.DateTime))
    active = sa.select(grants.c.job_id).where(grants.c.revoked_at.is_(None)).distinct()
    released = [row[0] for row in bind.execute(active)]
    if released:
        bind.execute(sa.update(jobs).where(jobs.c.id.in_(released)).values(published=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("published", existing_type=sa.Boolean(), server_default=None)
    op.drop_table("release_grants")  # its indexes go with it (MariaDB refuses dropping
    op.drop_table("segmentation_requests")  # an index a foreign key needs first)
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_uploads_owner_id"), type_="unique")
        batch_op.drop_column("number")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_jobs_kind"), type_="unique")
        batch_op.drop_column("number")
    op.drop_table("counters")
    op.drop_table("role_permissions")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("password_expires_at")
        batch_op.drop_column("must_change_password")
