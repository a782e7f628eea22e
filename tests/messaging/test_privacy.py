"""After a campaign through real Kannel (with delivery reports and an MO opt-out), no full
phone number is in any database column, any log record (ours, httpx's, at DEBUG) or
Kannel's own logs; the gateway adapter is the only place a number is opened."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from cipherseg.messaging import (
    DeliveryPolicy,
    EngineConfig,
    Recipient,
    SendingEngine,
    SqlMessageStore,
    StaticRecipients,
    vault_opener,
)
from cipherseg.messaging.callbacks import CallbackServer, DlrSigner, MessagingCallbacks
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.store import CampaignSegment
from cipherseg.pii import PiiVault
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
N = 25


def numbers_in(haystack: str, nationals: list[str]) -> list[str]:
    flat = re.sub(r"[\s\-().]", "", haystack)
    return [n for n in nationals if n in flat]


def test_no_full_number_in_database_or_logs(
        tmp_path: Path, store: SqlMessageStore, vault: PiiVault,
        make_people: Callable[..., list[Recipient]], kannel: Callable[..., KannelHarness],
        handset: Callable[[int], FakeSmscClient], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    signer = DlrSigner(secrets.token_bytes(32))
    token = secrets.token_urlsafe(16)
    callbacks = MessagingCallbacks(store, signer=signer, mo_token=token, region="CN",
                                   phone_key=lambda e: vault.pseudonym("phone", e),
                                   opt_out_reply="Unsubscribed.")
    people = make_people(N)
    nationals = [f"139{i:08d}" for i in range(N)]
    with callbacks, CallbackServer(callbacks) as server:
        harness = kannel(mo_url=server.mo_url(token))
        phone = handset(harness.ports.smsc)
        harness.wait_smsc_online()
        gateway = KannelGateway(sendsms_url=harness.sendsms_url, username=harness.username,
                                password=harness.password, open_phone=vault_opener(vault),
                                dlr_url=server.dlr_url, signer=signer, sender="JOYMALL")
        engine = SendingEngine(store, gateway, StaticRecipients(people), config=EngineConfig(
            rate_per_second=None, report_wait=timedelta(seconds=1), idle_sleep=0.05,
            policy=DeliveryPolicy(quiet_hours=None)))
        cid = store.create_campaign("Privacy", [CampaignSegment(
            "s", "All", "Hi {{ first_name }} {{ opt_out }}")], opt_out_text="STOP=stop")
        engine.enqueue(cid, {"s": people})
        store.transition_campaign(cid, "sending", allowed_from=["draft"])
        engine.run(cid, max_seconds=60)
        phone.send_mo(f"+{86}{nationals[3]}", "10086", "STOP")
        phone.send_mo("not-a-number", "10086", "STOP")
        phone.wait_for(N + 1, timeout=20)
        engine.close()
    # The messages really went out, to the real numbers (the phones saw them).
    assert {m.receiver for m in phone.received} >= {f"+86{n}" for n in nationals}
    assert store.suppression_counts() == {"opt_out": 1}

    # The scanner sees numbers however they are spaced.
    assert numbers_in(f"to +86 {nationals[0][:3]} {nationals[0][3:7]}-{nationals[0][7:]}",
                      nationals) == [nationals[0]]
    # 1. Every column of every table.
    insp = inspect(store.engine)
    leaks: list[str] = []
    with store.engine.connect() as conn:
        for table in insp.get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | bytearray):
                        blob = bytes(value)
                        hay = blob.decode("latin-1") + blob.hex()
                    else:
                        hay = str(value)
                    leaks += [f"{table}: {n}" for n in numbers_in(hay, nationals)]
    assert leaks == []
    # 2. Every log record of this process, DEBUG and up (ours, httpx, httpcore).
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "logging must have been captured"
    assert numbers_in(logged, nationals) == []
    # 3. Kannel's own logs and console output (level 2: warnings and errors). Its message
    # store, the gateway's queue, holds numbers while messages wait; it is not scanned.
    outputs = [*harness.workdir.glob("*.log"), *harness.workdir.glob("*.out")]
    assert len(outputs) == 4
    for log in outputs:
        assert numbers_in(log.read_text(errors="replace"), nationals) == [], log.name
