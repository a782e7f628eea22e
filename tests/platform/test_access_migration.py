"""Migration 0003_access on SQLite, PostgreSQL and MariaDB with data in it: existing releases
become grants to every merchant that exists, jobs and uploads get their numbers per kind
(and later numbers continue from there), the permission matrix starts at the defaults; and
downgrading brings ``jobs.published`` back for the jobs still released."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from cipherseg.platform.db import make_engine, make_sessionmaker
from cipherseg.platform.jobs import enqueue
from cipherseg.platform.migrate import downgrade, upgrade
from cipherseg.platform.models import Job, ReleaseGrant, Segment, Upload, User
from cipherseg.platform.numbering import job_scope, next_number, upload_scope
from cipherseg.platform.permissions import DEFAULT_MATRIX
from cipherseg.platform.services.permissions import matrix

NOW = datetime(2026, 12, 1, 12, 0)


def _old_rows(conn: sa.Connection) -> dict[str, int]:
    """Users, uploads and jobs as version 0002 stored them."""
    meta = sa.MetaData()
    meta.reflect(conn, only=["users", "uploads"])
    users, uploads = meta.tables["users"], meta.tables["uploads"]
    segments = sa.Table("segments", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                        *(sa.Column(c, t) for c, t in (
                            ("job_id", sa.Integer), ("position", sa.Integer),
                            ("name", sa.String), ("size", sa.Integer), ("centroid", sa.JSON))))
    jobs = sa.Table("jobs", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                    *(sa.Column(c, t) for c, t in (("kind", sa.String), ("status", sa.String),
        ("progress", sa.Float), ("stage", sa.String), ("owner_id", sa.Integer),
        ("created_by", sa.Integer), ("params", sa.JSON), ("published", sa.Boolean),
        ("created_at", sa.DateTime), ("finished_at", sa.DateTime))))
    ids = {}
    for name, role, active in (("admin", "admin", True), ("mall", "owner", True),
                               ("mall2", "owner", True), ("shop", "merchant", True),
                               ("old-shop", "merchant", False), ("sms", "operator", True)):
        ids[name] = conn.execute(users.insert().values(
            username=name, password_hash="x", role=role, active=active,
            created_at=NOW)).inserted_primary_key[0]

    def job(kind: str, owner: str, published: bool) -> int:
        return int(conn.execute(jobs.insert().values(
            kind=kind, status="done", progress=1.0, stage="done", owner_id=ids[owner],
            created_by=ids[owner], params={}, published=published, created_at=NOW,
            finished_at=NOW)).inserted_primary_key[0])

    for _ in range(3):
        job("import", "mall", False)
    ids["seg1"] = job("segmentation", "mall", True)
    conn.execute(segments.insert().values(job_id=ids["seg1"], position=0, name="Loyal",
                                          size=60, centroid={"monetary": 1.0}))
    ids["seg2"] = job("segmentation", "mall", False)
    ids["other"] = job("segmentation", "mall2", True)
    ids["joint"] = job("joint", "mall2", True)
    ids["joint2"] = job("joint", "mall", False)
    for owner in ("mall", "mall", "mall2"):  # uploads after the jobs: numbered apart
        conn.execute(uploads.insert().values(
            owner_id=ids[owner], kind="customers", filename="c.csv", sha256="0" * 64,
            size_bytes=1, stored_path="/nowhere", status="imported", rows_total=0,
            rows_done=0, n_errors=0, n_inserted=0, n_updated=0, n_unchanged=0,
            created_at=NOW))
    return ids


def test_existing_releases_become_grants_and_numbers_per_kind(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0002_messaging")
        with engine.begin() as conn:
            ids = _old_rows(conn)
        upgrade(engine)
        with make_sessionmaker(engine)() as s:
            grants = {(g.job_id, g.merchant_id, g.granted_by) for g in s.scalars(
                sa.select(ReleaseGrant))}
            merchants = (ids["shop"], ids["old-shop"])
            assert grants == {(ids[j], m, ids[o]) for j, o in (("seg1", "mall"),
                                                               ("other", "mall2"),
                                                               ("joint", "mall2"))
                              for m in merchants}
            numbers = {j.id: (j.kind, j.number) for j in s.scalars(sa.select(Job))}
            assert numbers[ids["seg1"]] == ("segmentation", 1)
            assert numbers[ids["seg2"]] == ("segmentation", 2)
            assert numbers[ids["other"]] == ("segmentation", 1)  # mall2's first
            assert numbers[ids["joint"]] == ("joint", 1)          # joint: one numbering
            assert numbers[ids["joint2"]] == ("joint", 2)
            assert sorted(n for k, n in numbers.values() if k == "import") == [1, 2, 3]
            assert sorted((u.owner_id, u.number) for u in s.scalars(sa.select(Upload))) == \
                [(ids["mall"], 1), (ids["mall"], 2), (ids["mall2"], 1)]
            assert matrix(s) == DEFAULT_MATRIX
            # altering tables (a copy on SQLite) deleted nothing that refers to them
            assert s.scalar(sa.select(sa.func.count()).select_from(Segment)) == 1
            assert not any(u.must_change_password for u in s.scalars(sa.select(User)))
            # new numbers continue where the migrated ones stop
            mall = s.get(User, ids["mall"])
            assert mall is not None
            assert enqueue(s, "segmentation", owner=mall, params={}).number == 3
            assert next_number(s, job_scope("joint", mall.id)) == 3
            assert next_number(s, upload_scope(mall.id)) == 3
            s.rollback()
            # a revoked grant is not a release any more when going back
            s.execute(sa.update(ReleaseGrant).where(ReleaseGrant.job_id == ids["other"])
                      .values(revoked_at=datetime.now(UTC)))
            s.commit()
        downgrade(engine, "0002_messaging")
        with engine.connect() as conn:
            published = dict(conn.execute(sa.text("SELECT id, published FROM jobs")).all())
            n_segments = conn.execute(sa.text("SELECT COUNT(*) FROM segments")).scalar()
        assert {i for i, p in published.items() if p} == {ids["seg1"], ids["joint"]}
        assert n_segments == 1
    finally:
        engine.dispose()


def test_concurrent_allocations_never_share_a_number(db_url: str) -> None:
    """Eight threads, five numbers each, in one scope, each in its own transaction: the
    counter row's lock (or SQLite's write lock) serialises them; all 40 numbers differ."""
    import threading

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        factory = make_sessionmaker(engine)
        got: list[int] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    with factory() as s:
                        n = next_number(s, "segmentation:42")
                        s.commit()
                    got.append(n)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(got) == list(range(1, 41))
    finally:
        engine.dispose()


def test_requests_grants_and_revocation_on_every_backend(platform) -> None:  # type: ignore[no-untyped-def]
    """The services' queries on each backend (the pages and browsers are tested on SQLite):
    a request approved queues a job granted in advance, counts per decision, revocation."""
    from cipherseg.platform.models import RequestStatus, Role, SegmentationRequest
    from cipherseg.platform.services import grants
    from cipherseg.platform.services import requests as requests_service
    from cipherseg.platform.services.users import create_user

    owner_client = platform.client("mall")
    owner_client.upload("customers", "c.csv", b"customer_id,phone,consent\nC1,13800138000,yes\n")
    platform.run_jobs()
    ctx = platform.ctx
    with ctx.sessions() as s:
        mall = s.scalars(sa.select(User).where(User.username == "mall")).one()
        shop = s.scalars(sa.select(User).where(User.username == "shop")).one()
        shop2 = create_user(s, "shop2", "a long passphrase", Role.MERCHANT)
        s.commit()
        forms = [requests_service.RequestForm(owner="mall", purpose=f"p{i}", k=3,
                                              features=["recency"], window_days=30)
                 for i in range(3)]
        reqs = [requests_service.create(ctx, s, shop, f, features=["recency", "frequency"])
                for f in forms]
        job = requests_service.approve(ctx, s, mall, reqs[0])
        requests_service.decline(s, mall, reqs[1], "no")
        assert requests_service.counts(s) == {"pending": 1, "approved": 1, "declined": 1,
                                              "withdrawn": 0}
        assert [v.status for v in requests_service.for_owner(s, mall)] == \
            ["pending", "declined", "running"]
        assert grants.granted_jobs(s, shop) == []          # queued, not finished
        job.status = "done"
        s.commit()
        assert [j.id for j in grants.granted_jobs(s, shop)] == [job.id]
        assert grants.granted_jobs(s, shop2) == []
        assert grants.released_jobs(s) == [job]
        assert [v.status for v in requests_service.for_merchant(s, shop)][-1] == "released"
        grants.grant(s, mall, job, ["shop2"])
        s.commit()
        assert grants.grantees(s, job.id) == ["shop", "shop2"]
        grants.revoke(ctx, s, mall, job, "shop")
        assert grants.granted_jobs(s, shop) == [] and grants.grantees(s, job.id) == ["shop2"]
        assert requests_service.for_merchant(s, shop)[-1].status == "revoked"
        assert s.scalars(sa.select(SegmentationRequest.status).where(
            SegmentationRequest.id == reqs[0].id)).one() == RequestStatus.APPROVED
