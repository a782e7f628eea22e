"""Sending throughput: messages per second through the outbox and through a real Kannel.

Each run builds ``n`` synthetic customers (sealed numbers, as in production), queues a
campaign on a fresh SQLite file (the platform's default database) and lets the engine send
it with no rate limit. Reported per gateway:

* ``queue_per_s`` — customers queued per second (rules + idempotent inserts);
* ``send_per_s`` — messages the gateway accepted per second, claim to record;
* ``delivered_per_s`` — for Kannel, messages per second until the last delivery report
  (from the fake SMSC, via smsbox, to the callback server) was applied. The callback
  server runs in a process of its own, as the web app would in production.

>>> r = run_send_benchmark("/tmp/cipherseg-send-doc", messages=20, kannel=False)
>>> r["runs"][0]["gateway"], r["runs"][0]["delivered"]
('outbox', 20)
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event

from cipherseg.messaging.callbacks import CallbackServer, DlrSigner, MessagingCallbacks
from cipherseg.messaging.engine import EngineConfig, SendingEngine, enqueue_campaign
from cipherseg.messaging.gateway import Gateway, vault_opener
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.outbox import OutboxGateway
from cipherseg.messaging.recipients import Recipient, StaticRecipients, seal_recipient
from cipherseg.messaging.rules import DeliveryPolicy
from cipherseg.messaging.schema import standalone_tables
from cipherseg.messaging.store import CampaignSegment, SqlMessageStore
from cipherseg.pii import PiiKeyring, PiiVault
from cipherseg.progress import Progress
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness, kannel_installed

TEMPLATE = ("Hi {{ first_name|default('there') }}, {{ segment_name }} members save 20% at "
            "{{ shop_name }} this weekend. {{ opt_out }}")


def _engine_for(database: str) -> Engine:
    """A SQLite file path, or a database URL (PostgreSQL, MariaDB)."""
    if "://" not in database:
        return _sqlite(Path(database))
    url = database
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    elif url.startswith(("mysql://", "mariadb://")):
        url = "mysql+pymysql://" + url.split("://", 1)[1]
    return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


def _sqlite(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30,
                                                            "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _rec: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


def _callback_process(database: str, secret: bytes, keyring_json: str, conn: Any) -> None:
    """Serve delivery reports from a process of its own (as the web app would)."""
    vault = PiiVault(PiiKeyring.from_json(keyring_json))
    store = SqlMessageStore(_engine_for(database), standalone_tables())
    callbacks = MessagingCallbacks(store, signer=DlrSigner(secret),
                                   mo_token=secrets.token_urlsafe(16),
                                   phone_key=lambda e: vault.pseudonym("phone", e), region="CN")
    server = CallbackServer(callbacks).start()
    conn.send(server.dlr_url)
    threading.Event().wait()


def _start_callback_process(database: str, secret: bytes, keyring_json: str
                            ) -> tuple[Any, str]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_callback_process, args=(database, secret, keyring_json, child),
                       daemon=True)
    proc.start()
    if not parent.poll(60):
        proc.terminate()
        raise RuntimeError("the delivery-report process did not start")
    return proc, str(parent.recv())


def synthetic_recipients(vault: PiiVault, n: int) -> list[Recipient]:
    """``n`` customers with valid Chinese mobile numbers, sealed with ``vault``."""
    names = ["Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang"]
    return [seal_recipient(vault, f"c{i}", f"+86139{i:08d}", consent=True, region="CN",
                           first_name=names[i % len(names)]) for i in range(n)]


def _one_run(workdir: Path, vault: PiiVault, people: list[Recipient], gateway_name: str,
             concurrency: int, progress: Progress | None,
             database_url: str | None = None) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    database = database_url or str(workdir / "messages.db")
    db = _engine_for(database)
    store = SqlMessageStore(db, standalone_tables())
    store.t.drop_all(db)
    store.create_schema()
    n = len(people)
    harness: KannelHarness | None = None
    phone: FakeSmscClient | None = None
    callbacks_proc: Any = None
    gateway: Gateway
    try:
        if gateway_name == "kannel":
            secret = secrets.token_bytes(32)
            signer = DlrSigner(secret)
            callbacks_proc, dlr_url = _start_callback_process(
                database, secret, vault.keyring.to_json())
            harness = KannelHarness(workdir / "kannel").start()
            phone = FakeSmscClient(harness.ports.smsc).connect()
            harness.wait_smsc_online()
            gateway = KannelGateway(sendsms_url=harness.sendsms_url,
                                    username=harness.username, password=harness.password,
                                    open_phone=vault_opener(vault), dlr_url=dlr_url,
                                    signer=signer, sender="JOYMALL",
                                    max_connections=max(concurrency, 8))
        else:
            gateway = OutboxGateway(store)
        policy = DeliveryPolicy(quiet_hours=None, frequency_cap=None)
        config = EngineConfig(rate_per_second=None, concurrency=concurrency, batch_size=200,
                              idle_sleep=0.02, report_wait=timedelta(seconds=0), policy=policy)
        engine = SendingEngine(store, gateway, StaticRecipients(people), config=config)
        cid = store.create_campaign("Bench", [CampaignSegment("s", "Loyal", TEMPLATE)],
                                    shop_name="Joy Mall", opt_out_text="Reply STOP to opt out")
        t0 = time.perf_counter()
        enqueue_campaign(store, cid, {"s": people}, policy)
        t_queue = time.perf_counter() - t0
        store.transition_campaign(cid, "sending", allowed_from=["draft"])
        done = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["stats"] = engine.run(cid, max_seconds=600)
            finally:
                done.set()

        t1 = time.perf_counter()
        worker = threading.Thread(target=work, name="bench-send")
        worker.start()
        label = f"{gateway_name} ×{concurrency}"
        while not done.wait(0.2):
            if progress is not None:
                counts = store.state_counts(cid)
                progress(label, counts.get("sent", 0) + counts.get("delivered", 0), n)
        worker.join()
        t_send = time.perf_counter() - t1
        delivered = store.state_counts(cid).get("delivered", 0)
        deadline = time.monotonic() + 120
        while delivered < n and time.monotonic() < deadline:
            time.sleep(0.05)
            delivered = store.state_counts(cid).get("delivered", 0)
            if progress is not None:
                progress(label, delivered, n)
        t_all = time.perf_counter() - t1
        if progress is not None:
            progress(label, delivered, n)
        engine.close()
        received = len(phone.received) if phone is not None else delivered
        stats = result["stats"]
        return {
            "gateway": gateway_name, "messages": n, "concurrency": concurrency,
            "accepted": stats.accepted + stats.delivered, "delivered": delivered,
            "received_by_handsets": received,
            "queue_seconds": round(t_queue, 3), "queue_per_s": round(n / t_queue, 1),
            "send_seconds": round(t_send, 3), "send_per_s": round(n / t_send, 1),
            "delivered_seconds": round(t_all, 3),
            "delivered_per_s": round(delivered / t_all, 1) if t_all else None,
        }
    finally:
        if phone is not None:
            phone.close()
        if harness is not None:
            harness.stop()
        if callbacks_proc is not None:
            callbacks_proc.terminate()
            callbacks_proc.join(timeout=10)
        db.dispose()


def run_send_benchmark(workdir: str | Path, *, messages: int = 2000,
                       concurrency: tuple[int, ...] = (8, 32), kannel: bool = True,
                       database_url: str | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Send ``messages`` through the outbox, then through Kannel at each concurrency.

    ``database_url`` (an empty PostgreSQL or MariaDB database; its messaging tables are
    dropped and re-created) replaces the default SQLite file.
    """
    workdir = Path(workdir)
    vault = PiiVault(PiiKeyring.generate())
    people = synthetic_recipients(vault, messages)
    runs = [_one_run(workdir / "outbox", vault, people, "outbox", concurrency[0], progress,
                     database_url)]
    if kannel:
        if not kannel_installed():
            raise RuntimeError("Kannel is not installed; run scripts/system-deps.sh or pass "
                               "--no-kannel")
        for c in concurrency:
            runs.append(_one_run(workdir / f"kannel-{c}", vault, people, "kannel", c,
                                 progress, database_url))
    backend = "sqlite (WAL)" if database_url is None else database_url.split(":", 1)[0]
    return {"benchmark": "send", "messages": messages, "database": backend,
            "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
            "runs": runs}


def plot_send_benchmark(result: dict[str, Any], path: str | Path) -> None:
    """Bar chart of messages per second by gateway and concurrency (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    labels = [f"{r['gateway']}\n×{r['concurrency']}" if r["gateway"] == "kannel"
              else "outbox" for r in runs]
    send = [r["send_per_s"] for r in runs]
    delivered = [r["delivered_per_s"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], send, width=0.4, label="accepted by gateway")
    ax.bar([x + 0.2 for x in xs], delivered, width=0.4, label="delivered (DLR applied)")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("messages / second")
    ax.set_title(f"Sending {result['messages']} messages ({result['database']}, "
                 "no rate limit)")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
