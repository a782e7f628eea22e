"""Helpers of the hardening tests (issue 16): a released segmentation with chosen segment
names, built through the upload pipeline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cipherseg.platform.models import Customer, Job, ReleaseGrant, Segment, SegmentMember, User
from cipherseg.platform.numbering import job_scope, next_number

CLI = str(Path(sys.executable).with_name("cipherseg"))
CENTROID = {"recency_days": 12.0, "frequency": 6.0, "monetary": 180.0}


def customers_csv(n: int, start: int = 0) -> bytes:
    """``n`` valid customers rows (with consent) as CSV."""
    return ("customer_id,phone,consent,first_name\n" + "".join(
        f"C{i:05d},1380013{i:04d},yes,Li\n" for i in range(start, start + n))).encode()


def released_segmentation(platform: Any, names: tuple[str, ...] = ("Loyal", "Regular"),
                          n: int = 120) -> tuple[int, int]:
    """Upload ``n`` customers as ``mall``, add a finished segmentation with one segment per
    name (customers split evenly), release it to ``shop``. ``platform`` is a test platform
    or a context. Returns (job id, job number)."""
    import io

    from cipherseg.platform.app import make_worker
    from cipherseg.platform.services.uploads import save_upload

    ctx = getattr(platform, "ctx", platform)
    with ctx.sessions() as s:
        owner = s.scalars(select(User).where(User.username == "mall")).one()
        save_upload(ctx, s, owner, "customers", "customers.csv", io.BytesIO(customers_csv(n)))
    make_worker(ctx, threads=1).run_until_empty()
    with ctx.sessions() as s:
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        ids = list(s.scalars(select(Customer.id).where(Customer.owner_id == owner_id)
                             .order_by(Customer.external_id)))
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id,
                  params={"k": len(names), "features": ["recency"], "scheme": "ckks"},
                  result={"n_customers": len(ids)},
                  number=next_number(s, job_scope("segmentation", owner_id)))
        s.add(job)
        s.flush()
        s.add(ReleaseGrant(job_id=job.id, granted_by=owner_id, merchant_id=s.scalars(
            select(User.id).where(User.username == "shop")).one()))
        per = len(ids) // len(names)
        for pos, name in enumerate(names):
            members = ids[pos * per:(pos + 1) * per]
            s.add(Segment(job_id=job.id, position=pos, name=name, size=len(members),
                          centroid=CENTROID))
            s.add_all(SegmentMember(job_id=job.id, customer_id=c, pseudonym=f"p{c}",
                                    segment_index=pos) for c in members)
        s.commit()
        return job.id, job.number


PASSWORD = "correct horse battery"
USERS = {"admin": "admin", "mall": "owner", "shop": "merchant", "centre": "centre",
         "sms": "operator"}


def prepared_data_dir(data: Path, **settings: object) -> Any:
    """A migrated SQLite platform in ``data`` with one user per role (password
    :data:`PASSWORD`); returns its in-process context (dispose its engine when done)."""
    from cipherseg.platform.app import make_context
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.db import make_engine, make_sessionmaker
    from cipherseg.platform.migrate import upgrade
    from cipherseg.platform.security import hash_password

    s = Settings(data_dir=data, environment="test", worker_threads=0,
                 centre_process=False, **settings)  # type: ignore[arg-type]
    engine = make_engine(s.resolved_database_url())
    upgrade(engine)
    digest = hash_password(PASSWORD)
    with make_sessionmaker(engine)() as db:
        db.add_all([User(username=n, password_hash=digest, role=r, active=True)
                    for n, r in USERS.items()])
        db.commit()
    engine.dispose()
    return make_context(s)


def platform_env(data: Path, **settings: str) -> dict[str, str]:
    """The environment of ``cipherseg serve`` on ``data`` (no CIPHERSEG_* of the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    env.update({"CIPHERSEG_DATA_DIR": str(data), "CIPHERSEG_WORKER_THREADS": "1",
                "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "CIPHERSEG_ENVIRONMENT": "test",
                "CIPHERSEG_CENTRE_PROCESS": "false", "PYTHONUNBUFFERED": "1"})
    env.update({f"CIPHERSEG_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def live_server(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, Any]]:
    """``cipherseg serve`` on a free loopback port until the block ends; yields its URL and
    process (its stdout and stderr go to ``log_path``)."""
    from cipherseg.testing.ports import free_port
    from cipherseg.testing.server import wait_healthy

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen([CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_healthy(base, proc, seconds=60)
            except RuntimeError as exc:
                raise AssertionError(f"{exc}:\n{log_path.read_text()}") from exc
            yield base, proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_login(client: Any, username: str, password: str = PASSWORD) -> str:
    """Log ``client`` (an httpx.Client on a live server) in; returns its CSRF token."""
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": username, "password": password,
                                    "csrf_token": token})
    assert r.status_code == 303, r.text[:500]
    return str(client.get("/api/v1/me").json()["csrf_token"])


def temp_bytes_held(pid: int) -> int:
    """Bytes in the regular files process ``pid`` holds open outside its data directory's
    database (temporary files, deleted or not)."""
    total = 0
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
            if not target.startswith("/") or target.endswith((".db", ".db-journal",
                                                              ".db-wal", ".db-shm", ".log")):
                continue
            st = os.stat(fd)
        except OSError:
            continue
        import stat as stat_mod

        if stat_mod.S_ISREG(st.st_mode) and ("/tmp" in target or "(deleted)" in target):
            total += st.st_size
    return total


@dataclass
class BodyOutcome:
    status: int
    seconds: float
    sent: int
    max_temp: int


def send_big_body(base: str, pid: int, path: str, total: int, *, chunked: bool = False,
                  headers: dict[str, str] | None = None, content_type: str | None = None,
                  chunk: int = 256 * 1024) -> BodyOutcome:
    """POST ``total`` bytes to ``path`` over a raw socket, as fast as the server takes them,
    sampling the server's temporary files; stops when the server answers or closes."""
    import socket
    import threading
    import time
    from urllib.parse import urlsplit

    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    boundary = "xXhardeningXx"
    ctype = content_type or f"multipart/form-data; boundary={boundary}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {url.hostname}:{url.port}",
             f"Content-Type: {ctype}"]
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\n").encode()
    state = {"sent": 0, "done": False, "max_temp": 0}
    start = time.monotonic()

    def pump() -> None:
        payload = b"customer_id,phone,consent\n" + b"C1,13800138000,yes\n" * (chunk // 19)
        first = True
        try:
            while state["sent"] < total and not state["done"]:
                data = (head + payload)[:chunk] if first else payload[:chunk]
                first = False
                data = data[:total - state["sent"]]
                sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked
                             else data)
                state["sent"] += len(data)
            if chunked and not state["done"]:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    def sample() -> None:
        while not state["done"]:
            state["max_temp"] = max(state["max_temp"], temp_bytes_held(pid))
            time.sleep(0.02)

    threads = [threading.Thread(target=pump, daemon=True),
               threading.Thread(target=sample, daemon=True)]
    for t in threads:
        t.start()
    response = b""
    try:
        while b"\r\n" not in response:
            got = sock.recv(4096)
            if not got:
                break
            response += got
    finally:
        seconds = time.monotonic() - start
        state["done"] = True
        sock.close()
        for t in threads:
            t.join(timeout=30)
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return BodyOutcome(status, seconds, int(state["sent"]), int(state["max_temp"]))


def rss(pid: int) -> int:
    """The resident memory of process ``pid`` now (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


class RssSampler:
    """Samples a process's resident memory every 20 ms in a thread; ``peak`` is the most
    seen since the sampler started."""

    def __init__(self, pid: int) -> None:
        import threading

        self.pid = pid
        self.baseline = rss(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss(self.pid))
            except (OSError, AssertionError):
                return

    def stop(self) -> int:
        """Stop; returns the growth over the baseline in bytes."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak - self.baseline


def wait_upload(client: Any, url: str, seconds: float = 300) -> str:
    """Poll an upload's page until it has finished; returns the page."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        page = client.get(url).text
        if re.search(r'id="upload-status">(imported|rejected|failed)<', page):
            return page
        assert time.monotonic() < deadline, "the upload did not finish"
        time.sleep(0.5)
