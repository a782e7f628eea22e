"""A node's joint job in this process (its worker), against the services as processes."""

from __future__ import annotations

import io
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from cipherseg.nodes.client import ServiceClient
from cipherseg.nodes.invitation import new_signing_key, sign_invitation
from cipherseg.nodes.owner import run_owner
from cipherseg.nodes.terms import JointTerms
from cipherseg.nodes.wire import JointAborted
from cipherseg.platform.app import make_context, make_worker
from cipherseg.platform.core.config import Settings
from cipherseg.platform.db import make_engine, make_sessionmaker
from cipherseg.platform.migrate import upgrade
from cipherseg.platform.models import Job, Role, User
from cipherseg.platform.nodes.jobs import FEATURES, accept_invitation
from cipherseg.platform.services.uploads import save_upload
from cipherseg.platform.services.users import create_user
from cipherseg.testing.joint_services import joint_services
from cipherseg.testing.nodes import csv_bytes

pytestmark = pytest.mark.slow


def test_a_node_that_cannot_take_part_ends_the_session_at_once(tmp_path: Path) -> None:
    with joint_services(tmp_path / "services", ("north", "south"), contact_seconds=5,
                        join_minutes=10) as services:
        tokens = {}
        for what in ("manager", "centre"):
            path = tmp_path / f"south-{what}.token"
            path.write_text(getattr(services, f"{what}_tokens")["south"])
            tokens[what] = path
        settings = Settings(data_dir=tmp_path / "south", worker_threads=0,
                            node_name="south", node_manager_url=services.manager_url,
                            node_manager_token_file=tokens["manager"],
                            node_centre_url=services.centre_url,
                            node_centre_token_file=tokens["centre"])
        engine = make_engine(settings.resolved_database_url())
        upgrade(engine)
        with make_sessionmaker(engine)() as s:
            create_user(s, "mall", "a long passphrase 42", Role.OWNER)
            s.commit()
        engine.dispose()
        ctx = make_context(settings)
        with ctx.sessions() as s:  # customers, but no transactions in any window
            owner = s.scalars(select(User)).one()
            save_upload(ctx, s, owner, "customers", "c.csv", io.BytesIO(csv_bytes(
                ["customer_id", "phone", "consent", "first_name", "timezone"],
                [["S1", "+8613800000001", "yes", "", "Asia/Shanghai"]])))
        make_worker(ctx, threads=1).run_until_empty()

        terms = JointTerms(session=uuid.uuid4().hex, nodes=("north", "south"), n_clusters=2,
                           features=FEATURES, context={
                               "snapshot": "2025-07-01", "window_days": "30",
                               "manager": services.manager_url,
                               "centre": services.centre_url})
        north_failure: list[BaseException] = []

        def north() -> None:
            try:
                run_owner(terms, "north", np.random.default_rng(0).normal(size=(40, 3)),
                          manager=ServiceClient(services.manager_url, what="manager",
                                                token=services.manager_tokens["north"]),
                          centre=ServiceClient(services.centre_url, what="centre",
                                               token=services.centre_tokens["north"]),
                          contact_timeout=5, poll_wait=1)
            except BaseException as exc:
                north_failure.append(exc)

        thread = threading.Thread(target=north)
        thread.start()
        with ctx.sessions() as s:
            owner = s.scalars(select(User)).one()
            token = sign_invitation(terms, "north", new_signing_key(), valid_seconds=600)
            job = accept_invitation(ctx, s, owner, token)
            job_id = job.id
        started = time.monotonic()
        make_worker(ctx, threads=1).run_until_empty()
        thread.join(timeout=60)
        assert time.monotonic() - started < 60  # not the 10 minutes of the join deadline
        with ctx.sessions() as s:
            failed = s.get(Job, job_id)
            assert failed is not None and failed.status == "failed"
            assert "node south has no customers" in (failed.error or "")
        assert north_failure and isinstance(north_failure[0], JointAborted)
        assert "node south has no customers with transactions" in str(north_failure[0])
        ctx.engine.dispose()
