"""A sending worker run as its own process by ``test_crash.py`` (which kills it with SIGKILL).

Usage: ``python crash_worker.py CONFIG.json`` (``db``: a SQLite file or a database URL).
Rebuilds the same synthetic customers as the test (same keyring, so the same phone
pseudonyms) and sends the campaign through Kannel.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path


def main(config_path: str) -> int:
    from sqlalchemy import create_engine, event

    from cipherseg.messaging import (
        DeliveryPolicy,
        EngineConfig,
        SendingEngine,
        SqlMessageStore,
        StaticRecipients,
        seal_recipient,
        standalone_tables,
        vault_opener,
    )
    from cipherseg.messaging.callbacks import DlrSigner
    from cipherseg.messaging.kannel import KannelGateway
    from cipherseg.pii import PiiKeyring, PiiVault

    cfg = json.loads(Path(config_path).read_text())
    if "://" in cfg["db"]:  # a database URL (PostgreSQL)
        engine = create_engine(cfg["db"], pool_pre_ping=True)
    else:
        engine = create_engine(f"sqlite:///{cfg['db']}", connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: object, _rec: object) -> None:
            cur = conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    store = SqlMessageStore(engine, standalone_tables())
    vault = PiiVault(PiiKeyring.from_json(Path(cfg["keyring"]).read_text()))
    first = ["Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang"]
    people = StaticRecipients(
        seal_recipient(vault, f"c{i}", f"+86139{i:08d}", consent=True, region="CN",
                       first_name=first[i % len(first)]) for i in range(cfg["n"]))
    gateway = KannelGateway(sendsms_url=cfg["sendsms_url"], username=cfg["username"],
                            password=cfg["password"], open_phone=vault_opener(vault),
                            dlr_url=cfg["dlr_url"], signer=DlrSigner(bytes.fromhex(cfg["secret"])),
                            sender="JOYMALL")
    config = EngineConfig(rate_per_second=cfg["rate"], concurrency=8, batch_size=40,
                          lease=timedelta(seconds=cfg["lease"]),
                          in_doubt_grace=timedelta(seconds=cfg["grace"]),
                          report_wait=timedelta(seconds=1), idle_sleep=0.1,
                          worker_id=cfg["worker_id"], policy=DeliveryPolicy(quiet_hours=None))
    sender = SendingEngine(store, gateway, people, config=config)
    try:
        sender.run(cfg["campaign"], max_seconds=120)
    finally:
        sender.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
