"""Sending throughput: the engine through a real Kannel against Kannel fed directly.

Every run builds ``n`` synthetic customers (sealed numbers, as in production) and sends them
one message each with no rate limit through a fresh Kannel on loopback (bearerbox + smsbox
+ fake SMSC, whose handset side is a Python client), with delivery reports (SMSC submit,
then delivered) coming back over HTTP to a callback server in a process of its own, as the
web app would run it. Three kinds of run, alternated within each repeat so that they share
the machine's load:

* ``bare`` — Kannel alone: a thread pool posts the same requests (same headers, texts and
  dlr-urls) straight to smsbox, numbers opened beforehand; the report receiver only counts.
  The ceiling for anything that sends through this Kannel on this machine.
* ``engine`` on ``sqlite`` — the sending engine (rules, rendering, leases, the state
  machine) on a fresh SQLite file (WAL, the platform's default database), the report
  receiver applying every report to it (group commit).
* ``engine`` on ``postgresql`` — the same on a fresh database of a PostgreSQL server.

Reported per run: ``send_per_s`` (messages Kannel accepted per second, first request to
last answer recorded) and ``delivered_per_s`` (until the last delivery report was applied,
or for ``bare`` received) and ``load_1min`` (the machine's load average when it began); per
repeat, each engine run's ratio to the bare run next to it.
An ``outbox`` run (no Kannel) can be added for reference.

>>> r = run_send_benchmark("/tmp/cipherseg-send-doc", messages=20, kannel=False)
>>> r["runs"][0]["mode"], r["runs"][0]["delivered"]
('outbox', 20)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, event, text

from cipherseg.messaging.callbacks import CallbackServer, DlrSigner, MessagingCallbacks
from cipherseg.messaging.engine import EngineConfig, SendingEngine, enqueue_campaign
from cipherseg.messaging.gateway import (
    Gateway,
    OutboundSms,
    SealedPhone,
    SendStatus,
    vault_opener,
)
from cipherseg.messaging.kannel import KannelGateway
from cipherseg.messaging.outbox import OutboxGateway
from cipherseg.messaging.recipients import Recipient, StaticRecipients, seal_recipient
from cipherseg.messaging.rules import DeliveryPolicy
from cipherseg.messaging.schema import standalone_tables
from cipherseg.messaging.sms import count_sms
from cipherseg.messaging.store import CampaignSegment, SqlMessageStore
from cipherseg.messaging.templates import SmsTemplate
from cipherseg.pii import PiiKeyring, PiiVault
from cipherseg.progress import Progress
from cipherseg.testing.kannel import FakeSmscClient, KannelHarness, kannel_installed

TEMPLATE = ("Hi {{ first_name|default('there') }}, members save 20% at {{ shop_name }} "
            "this weekend. {{ opt_out }}")
OPT_OUT = "Reply STOP to opt out"


def _engine_for(database: str) -> Engine:
    """A SQLite file path, or a database URL (PostgreSQL, MariaDB)."""
    if "://" not in database:
        return _sqlite(Path(database))
    return create_engine(_driver_url(database), pool_size=20, max_overflow=20,
                         pool_pre_ping=True)


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


def _driver_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith(("mysql://", "mariadb://")):
        return "mysql+pymysql://" + url.split("://", 1)[1]
    return url


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, uniquely named database on a PostgreSQL server (dropped afterwards).

    ``server_url`` names any database the user may connect to, e.g.
    ``postgresql://postgres@127.0.0.1:5432/postgres``.
    """
    if not server_url.startswith("postgresql://"):
        raise RuntimeError("--postgresql needs a postgresql:// URL")
    name = f"cs_bench_{secrets.token_hex(4)}"
    admin = create_engine(_driver_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise RuntimeError(f"cannot create a scratch database on {server_url.split('@')[-1]} "
                           f"({type(exc).__name__}); start PostgreSQL or pass "
                           "--no-postgresql") from exc
    base, _, _db = server_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _callback_process(database: str | None, secret: bytes, keyring_json: str,
                      conn: Any) -> None:
    """Serve delivery reports from a process of its own (as the web app would); without a
    database, only count them (the bare-Kannel run)."""
    if database is None:
        counting = _CountingServer().start()
        conn.send(counting.dlr_url)
        threading.Event().wait()
    vault = PiiVault(PiiKeyring.from_json(keyring_json))
    store = SqlMessageStore(_engine_for(str(database)), standalone_tables())
    callbacks = MessagingCallbacks(store, signer=DlrSigner(secret),
                                   mo_token=secrets.token_urlsafe(16),
                                   phone_key=lambda e: vault.pseudonym("phone", e), region="CN")
    server = CallbackServer(callbacks).start()
    conn.send(server.dlr_url)
    threading.Event().wait()


class _CountingServer:
    """A report receiver that only notes "delivered" reports: ``GET /count`` answers how
    many messages have one and when (``time.time()``) the last arrived."""

    def __init__(self) -> None:
        seen: set[str] = set()
        last = [0.0]
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                if self.path.startswith("/count"):
                    with lock:
                        body = f"{len(seen)} {last[0]}".encode()
                else:
                    if self.path.endswith("&s=1"):
                        message = self.path.split("m=", 1)[-1].split("&", 1)[0]
                        with lock:
                            seen.add(message)
                            last[0] = time.time()
                    body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.dlr_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/dlr"

    def start(self) -> _CountingServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self


def _start_callback_process(database: str | None, secret: bytes, keyring_json: str
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


def _render(people: list[Recipient]) -> list[str]:
    template = SmsTemplate(TEMPLATE)
    return [template.render(first_name=p.first_name or "", segment_name="Loyal",
                            shop_name="Joy Mall", opt_out=OPT_OUT) for p in people]


def _bare_run(workdir: Path, vault: PiiVault, people: list[Recipient], concurrency: int,
              progress: Progress | None) -> dict[str, Any]:
    """Kannel fed by a thread pool: no database, no rules, numbers opened beforehand."""
    numbers = {p.ref: vault_opener(vault)(p.phone) for p in people}
    texts = _render(people)
    secret = secrets.token_bytes(32)
    callbacks_proc, dlr_url = _start_callback_process(None, secret, "")
    harness: KannelHarness | None = None
    phone: FakeSmscClient | None = None
    gateway: KannelGateway | None = None
    try:
        harness = KannelHarness(workdir / "kannel").start()
        phone = FakeSmscClient(harness.ports.smsc).connect()
        harness.wait_smsc_online()
        gateway = KannelGateway(sendsms_url=harness.sendsms_url, username=harness.username,
                                password=harness.password,
                                open_phone=lambda sealed: numbers[sealed.context],
                                dlr_url=dlr_url, signer=DlrSigner(secret), sender="JOYMALL",
                                max_connections=max(concurrency, 8))
        outbound = []
        for i, (p, body) in enumerate(zip(people, texts, strict=True)):
            count = count_sms(body)
            outbound.append(OutboundSms(i + 1, 1, SealedPhone(b"", p.ref, p.phone.masked),
                                        body, count.encoding, count.parts))
        n = len(outbound)
        label = f"bare Kannel ×{concurrency}"
        counted = f"{dlr_url.rsplit('/', 1)[0]}/count"

        def delivered() -> tuple[int, float]:
            count, at = httpx.get(counted, timeout=5, trust_env=False).text.split()
            return int(count), float(at)

        wall0 = time.time()
        t0 = time.perf_counter()
        accepted = 0
        with ThreadPoolExecutor(concurrency) as pool:
            for i, res in enumerate(pool.map(gateway.send, outbound)):
                accepted += res.status == SendStatus.ACCEPTED
                if progress is not None and i % 200 == 0:
                    progress(label, i, n)
        t_send = time.perf_counter() - t0
        done, last = delivered()
        deadline = time.monotonic() + 60
        while done < n and time.monotonic() < deadline:
            time.sleep(0.02)
            done, last = delivered()
            if progress is not None:
                progress(label, done, n)
        t_all = max(last - wall0, t_send)
        if progress is not None:
            progress(label, done, n)
        received = len(phone.wait_for(n, timeout=10))
        return _result("bare", None, n, concurrency, accepted, done, received, None, t_send,
                       t_all)
    finally:
        if gateway is not None:
            gateway.close()
        if phone is not None:
            phone.close()
        if harness is not None:
            harness.stop()
        callbacks_proc.terminate()
        callbacks_proc.join(timeout=10)


def _result(mode: str, database: str | None, n: int, concurrency: int, accepted: int,
            delivered: int, received: int, t_queue: float | None, t_send: float,
            t_all: float) -> dict[str, Any]:
    return {
        "mode": mode, "database": database, "messages": n, "concurrency": concurrency,
        "accepted": accepted, "delivered": delivered, "received_by_handsets": received,
        "queue_seconds": None if t_queue is None else round(t_queue, 3),
        "queue_per_s": None if not t_queue else round(n / t_queue, 1),
        "send_seconds": round(t_send, 3), "send_per_s": round(n / t_send, 1),
        "delivered_seconds": round(t_all, 3),
        "delivered_per_s": round(delivered / t_all, 1) if t_all else None,
    }


def _engine_run(workdir: Path, vault: PiiVault, people: list[Recipient], *, kannel: bool,
                concurrency: int, progress: Progress | None,
                database_url: str | None = None) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
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
        if kannel:
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
        # A request Kannel did not answer (under load smsbox now and then resets a
        # connection: ReadError) stays in doubt for the grace a report has to prove it went
        # out (5 s: on loopback reports arrive within milliseconds, at most ~2 s behind under
        # load); then it is sent again. Leases (10 s) far exceed a batch (under a second).
        config = EngineConfig(rate_per_second=None, concurrency=concurrency, batch_size=200,
                              idle_sleep=0.02, report_wait=timedelta(seconds=0),
                              lease=timedelta(seconds=10), in_doubt_grace=timedelta(seconds=5),
                              policy=policy)
        engine = SendingEngine(store, gateway, StaticRecipients(people), config=config)
        cid = store.create_campaign("Bench", [CampaignSegment("s", "Loyal", TEMPLATE)],
                                    shop_name="Joy Mall", opt_out_text=OPT_OUT)
        t0 = time.perf_counter()
        enqueue_campaign(store, cid, {"s": people}, policy)
        t_queue = time.perf_counter() - t0
        store.transition_campaign(cid, "sending", allowed_from=["draft"])
        done = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["stats"] = engine.run(cid, max_seconds=600)
            except BaseException as exc:
                result["error"] = exc
            finally:
                done.set()

        t1 = time.perf_counter()
        worker = threading.Thread(target=work, name="bench-send")
        worker.start()
        backend = "sqlite" if database_url is None else database_url.split(":", 1)[0]
        label = f"engine on {backend} ×{concurrency}" if kannel else "outbox"
        while not done.wait(0.2):
            if progress is not None:
                counts = store.state_counts(cid)
                progress(label, counts.get("sent", 0) + counts.get("delivered", 0), n)
        worker.join()
        if "error" in result:
            raise RuntimeError(f"the engine stopped: {result['error']!r}") from result["error"]
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
        received = len(phone.wait_for(n, timeout=10)) if phone is not None else delivered
        stats = result["stats"]
        return {**_result("engine" if kannel else "outbox", backend, n, concurrency,
                          stats.accepted + stats.delivered, delivered, received, t_queue,
                          t_send, t_all),
                "in_doubt": stats.in_doubt, "retried": stats.retried, "down": stats.down,
                "requeued": stats.requeued}
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
                       concurrency: tuple[int, ...] = (32,), kannel: bool = True,
                       postgresql: str | None = None, repeats: int = 1,
                       outbox: bool = False, progress: Progress | None = None
                       ) -> dict[str, Any]:
    """Bare Kannel, then the engine through Kannel on SQLite (and on a scratch database of
    the PostgreSQL server ``postgresql``), at each concurrency, ``repeats`` times; with
    ``kannel=False`` (or ``outbox=True``) an outbox run too.

    The ratios compare each engine run with the bare run of the same repeat and
    concurrency (they ran minutes apart on the same machine)."""
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    load_before = round(os.getloadavg()[0], 2)
    vault = PiiVault(PiiKeyring.generate())
    people = synthetic_recipients(vault, messages)
    runs: list[dict[str, Any]] = []
    if outbox or not kannel:
        runs.append({**_engine_run(workdir / "outbox", vault, people, kannel=False,
                                   concurrency=concurrency[0], progress=progress),
                     "repeat": 0})
    if kannel and not kannel_installed():
        raise RuntimeError("Kannel is not installed; run scripts/system-deps.sh or pass "
                           "--no-kannel")
    ratios: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(scratch_database(postgresql)) \
            if kannel and postgresql else None
        for repeat in range(repeats if kannel else 0):
            for c in concurrency:
                here = workdir / f"r{repeat}-c{c}"
                load = round(os.getloadavg()[0], 2)
                bare = {**_bare_run(here / "bare", vault, people, c, progress),
                        "repeat": repeat, "load_1min": load}
                runs.append(bare)
                for name, url in (("sqlite", None), ("postgresql", pg_url)):
                    if name == "postgresql" and url is None:
                        continue
                    load = round(os.getloadavg()[0], 2)
                    run = {**_engine_run(here / name, vault, people, kannel=True,
                                         concurrency=c, progress=progress, database_url=url),
                           "repeat": repeat, "load_1min": load}
                    runs.append(run)
                    ratios.append({
                        "repeat": repeat, "concurrency": c, "database": name,
                        "accepted_ratio": round(run["send_per_s"] / bare["send_per_s"], 3),
                        "delivered_ratio": round(run["delivered_per_s"]
                                                 / bare["delivered_per_s"], 3)})
    return {"benchmark": "send", "messages": messages, "cpus": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "load_average_1min_before": load_before, "runs": runs,
            "ratios": ratios, "summary": _summary(ratios)}


def _summary(ratios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median and lowest ratio per (database, concurrency)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in ratios:
        groups.setdefault((r["database"], r["concurrency"]), []).append(r)
    out = []
    for (database, c), rs in sorted(groups.items()):
        acc = [r["accepted_ratio"] for r in rs]
        dlv = [r["delivered_ratio"] for r in rs]
        out.append({"database": database, "concurrency": c, "repeats": len(rs),
                    "accepted_ratio_median": round(statistics.median(acc), 3),
                    "accepted_ratio_min": min(acc),
                    "delivered_ratio_median": round(statistics.median(dlv), 3),
                    "delivered_ratio_min": min(dlv)})
    return out


def plot_send_benchmark(result: dict[str, Any], path: str | Path) -> None:
    """Bars of messages per second per kind of run (median over repeats), PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str | None, int], list[dict[str, Any]]] = {}
    for r in result["runs"]:
        groups.setdefault((r["mode"], r["database"], r["concurrency"]), []).append(r)
    order = {"outbox": 0, "bare": 1, "engine": 2}
    dbs = {None: 0, "sqlite": 1, "postgresql": 2}
    keys = sorted(groups, key=lambda k: (k[2], order[k[0]], dbs.get(k[1], 3)))
    labels = [("outbox" if mode == "outbox" else "bare Kannel" if mode == "bare"
               else f"engine\n{db}") + (f"\n×{c}" if mode != "outbox" else "")
              for mode, db, c in keys]
    send = [statistics.median(r["send_per_s"] for r in groups[k]) for k in keys]
    delivered = [statistics.median(r["delivered_per_s"] for r in groups[k]) for k in keys]
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], send, width=0.4, label="accepted by Kannel")
    ax.bar([x + 0.2 for x in xs], delivered, width=0.4, label="delivered (report applied)")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("messages / second")
    summary = {(x["database"], x["concurrency"]): x for x in result.get("summary", [])}
    for x, (mode, db, c) in enumerate(keys):
        share = summary.get((db, c)) if mode == "engine" else None
        if share is not None:
            ax.annotate(f"median ratio to bare:\n{share['accepted_ratio_median']:.0%} "
                        f"accepted, {share['delivered_ratio_median']:.0%} delivered", (x, max(
                            send[x], delivered[x])), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7)
    repeats = max(len(v) for v in groups.values())
    loads = [r["load_1min"] for r in result["runs"] if "load_1min" in r]
    load = f"; load {min(loads):.0f}–{max(loads):.0f} on {result['cpus']} CPUs" if loads else ""
    ax.set_title(f"Sending {result['messages']} messages through Kannel (no rate limit; "
                 f"median of {repeats}{load})", fontsize=10)
    ax.margins(y=0.18)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
