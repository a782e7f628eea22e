"""Kill the sending worker (a real process, SIGKILL) mid-campaign and start it again:
through real Kannel, every customer gets exactly one message — none twice, none lost — and
every delivery report is applied, on SQLite and on PostgreSQL (where claims, batches marked
``sending`` and reports are written in groups, three batches in flight when it dies)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from cipherseg.messaging import (
    DeliveryPolicy,
    RetryPolicy,
    SqlMessageStore,
    enqueue_campaign,
    standalone_tables,
)
from cipherseg.messaging.callbacks import CallbackServer, DlrSigner, MessagingCallbacks
from cipherseg.messaging.store import CampaignSegment
from cipherseg.pii import PiiVault
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness
from db_servers import DB_KINDS, create_database, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKER = Path(__file__).with_name("crash_worker.py")
N = 300


@pytest.fixture(params=[k for k in DB_KINDS if k in ("sqlite", "postgresql")])
def crash_db(request: pytest.FixtureRequest, db_path: Path, store: SqlMessageStore
             ) -> Iterator[tuple[str, SqlMessageStore]]:
    """(what the worker opens, the test's store on it): the SQLite file, or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        yield str(db_path), store
        return
    url, name = create_database("postgresql", db_path.parent, prefix="cs_crash_",
                                sqlite_file="unused.db")
    engine = create_engine(url, pool_pre_ping=True)
    try:
        pg = SqlMessageStore(engine, standalone_tables())
        pg.create_schema()
        yield url, pg
    finally:
        engine.dispose()
        drop_database("postgresql", name)


def _spawn(config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        return subprocess.Popen([sys.executable, str(WORKER), str(config)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def test_sigkill_mid_campaign_then_restart(
        tmp_path: Path, crash_db: tuple[str, SqlMessageStore], vault: PiiVault,
        make_people: Callable[..., list], kannel: Callable[..., KannelHarness],
        handset: Callable[[int], FakeSmscClient]) -> None:
    database, store = crash_db
    secret = secrets.token_bytes(32)
    signer = DlrSigner(secret)
    callbacks = MessagingCallbacks(store, signer=signer, mo_token=secrets.token_urlsafe(16),
                                   phone_key=lambda e: vault.pseudonym("phone", e),
                                   region="CN", retry=RetryPolicy())
    keyring = tmp_path / "pii.keyring"
    keyring.write_text(vault.keyring.to_json())
    keyring.chmod(0o600)
    with callbacks, CallbackServer(callbacks) as server:
        harness = kannel()
        phone = handset(harness.ports.smsc)
        harness.wait_smsc_online()
        people = make_people(N)
        cid = store.create_campaign("Crash", [CampaignSegment(
            "s", "All", "Hi {{ first_name }}, weekend sale at {{ shop_name }}. {{ opt_out }}")],
            shop_name="Joy Mall", opt_out_text="Reply STOP to opt out")
        res = enqueue_campaign(store, cid, {"s": people}, DeliveryPolicy(quiet_hours=None))
        assert res.queued == N
        assert store.transition_campaign(cid, "sending", allowed_from=["draft"])

        config = tmp_path / "worker.json"
        config.write_text(json.dumps({
            "db": database, "keyring": str(keyring), "n": N, "campaign": cid,
            "sendsms_url": harness.sendsms_url, "username": harness.username,
            "password": harness.password, "dlr_url": server.dlr_url, "secret": secret.hex(),
            "rate": 120.0, "lease": 2.0, "grace": 1.5, "worker_id": "w1"}))
        log = tmp_path / "worker.log"
        first = _spawn(config, log)
        try:
            phone.wait_for(60, timeout=30)
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        time.sleep(0.3)
        received_at_kill = len(phone.received)
        counts = store.state_counts(cid)
        assert 60 <= received_at_kill < N, "the worker must die mid-campaign"
        assert counts.get("queued", 0) > 0

        second = _spawn(config, log)
        try:
            assert second.wait(timeout=90) == 0, log.read_text()[-2000:]
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
        got = phone.wait_for(N, timeout=20)
        time.sleep(1.0)                      # anything extra would show up by now
        per_number = Counter(m.receiver for m in phone.received)
        assert len(got) >= N
        assert per_number == Counter({f"+86139{i:08d}": 1 for i in range(N)})
        assert sum(per_number.values()) == N
        deadline = time.monotonic() + 20    # the last delivery reports may still be on the way
        while (final := store.state_counts(cid)) != {"delivered": N} and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert final == {"delivered": N}, final
        assert store.campaign(cid).status == "completed"
