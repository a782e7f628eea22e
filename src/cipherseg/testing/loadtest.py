"""``cipherseg bench platform``: a bounded load test of the platform on loopback.

It starts ``cipherseg serve`` (a fresh data directory; SQLite unless
``CIPHERSEG_DATABASE_URL`` is set) on a free 127.0.0.1 port, imports demo data, queues a
segmentation job, and then runs ``sessions`` concurrent logged-in sessions — a fifth of them
owners uploading small customer files through the API, the rest browsing the pages of their
role — each making at most ``requests_per_session`` requests, all stopping after
``max_seconds``. It reports p50/p95/max latency per request kind and the error count, checks
that every upload was imported (no lost upload) and that the job finished, and writes JSON and
a PNG plot. Traffic goes to the loopback interface only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from cipherseg.testing.ports import free_port
from cipherseg.testing.server import wait_healthy

PASSWORD = "load test passphrase"


@dataclass
class LoadResult:
    sessions: int
    requests: int
    errors: int
    seconds: float
    latency_ms: dict[str, dict[str, float]]
    uploads_sent: int
    uploads_imported: int
    customers_expected: int
    customers_found: int
    job_status: str
    job_seconds: float | None
    database: str
    load_average: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        a = self.latency_ms["all"]
        return (f"{self.sessions} sessions, {self.requests} requests (logins included) in "
                f"{self.seconds:.1f} s "
                f"({self.requests / max(self.seconds, 1e-9):.0f} req/s), errors {self.errors}; "
                f"latency after login p50 {a['p50']:.0f} ms, p95 {a['p95']:.0f} ms, max "
                f"{a['max']:.0f} ms; "
                f"uploads {self.uploads_imported}/{self.uploads_sent} imported, customers "
                f"{self.customers_found}/{self.customers_expected}; segmentation job "
                f"{self.job_status}" + (f" in {self.job_seconds:.1f} s" if self.job_seconds
                                        else ""))


def _cli() -> str:
    return str(Path(sys.executable).with_name("cipherseg"))


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    out = subprocess.run([_cli(), *args], env=env, input=stdin, capture_output=True, text=True,
                         timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cipherseg {' '.join(args)} failed: {out.stderr[-2000:]}")


async def _login(client: httpx.AsyncClient, user: str) -> str:
    """Log in and return the session's CSRF token; raise if that fails."""
    page = await client.get("/login")
    field = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    if field is None:
        raise RuntimeError("no login form")
    r = await client.post("/login", data={"username": user, "password": PASSWORD,
                                          "csrf_token": field.group(1)})
    if r.status_code != 303:
        raise RuntimeError(f"login as {user} failed: {r.status_code}")
    me = await client.get("/api/v1/me")
    csrf: str = me.json()["csrf_token"]
    return csrf


async def _recorded_login(client: httpx.AsyncClient, user: str, rec: _Recorder) -> str | None:
    """:func:`_login`, timed; a failure is counted (and ``None`` returned), not raised."""
    t = time.perf_counter()
    try:
        token = await _login(client, user)
    except (httpx.HTTPError, RuntimeError) as exc:
        rec.errors += 1
        if len(rec.error_samples) < 10:
            rec.error_samples.append(f"login: {type(exc).__name__}: {exc}"[:200])
        return None
    rec.samples.setdefault("POST login (Argon2id)", []).append((time.perf_counter() - t) * 1000)
    return token


class _Recorder:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}
        self.errors = 0
        self.error_samples: list[str] = []

    async def call(self, kind: str, coro: Any) -> httpx.Response | None:
        t = time.perf_counter()
        try:
            r: httpx.Response = await coro
        except httpx.HTTPError as exc:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind}: {type(exc).__name__}")
            return None
        self.samples.setdefault(kind, []).append((time.perf_counter() - t) * 1000)
        if r.status_code >= 400:
            self.errors += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind}: HTTP {r.status_code}")
        return r


BROWSE = {
    "owner": ["/owner/data", "/owner/customers", "/owner/jobs", "/api/v1/jobs",
              "/api/v1/uploads"],
    "merchant": ["/merchant/segments", "/api/v1/releases"],
    "operator": ["/operator/audiences", "/api/v1/audiences"],
    "centre": ["/centre/jobs", "/api/v1/centre/jobs"],
    "admin": ["/admin/users", "/admin/audit", "/api/v1/audit?limit=50"],
}


async def _browser(base: str, user: str, role: str, n: int, deadline: float,
                   rec: _Recorder) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        if await _recorded_login(client, user, rec) is None:
            return
        pages = BROWSE[role]
        for i in range(n):
            if time.monotonic() > deadline:
                return
            path = pages[i % len(pages)]
            await rec.call(f"GET {role} page" if not path.startswith("/api") else
                           f"GET {role} api", client.get(path))


async def _uploader(base: str, user: str, index: int, n: int, deadline: float,
                    rec: _Recorder, sent: list[int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        csrf = await _recorded_login(client, user, rec)
        if csrf is None:
            return
        for k in range(n):
            if time.monotonic() > deadline:
                return
            rows = "".join(f"L{index:02d}-{k:04d}-{j:02d},"
                           f"1390013{(index * 997 + k * 31 + j) % 10000:04d},yes\n"
                           for j in range(20))
            body = ("customer_id,phone,consent\n" + rows).encode()
            r = await rec.call("POST upload (api)", client.post(
                "/api/v1/uploads", data={"kind": "customers"},
                files={"file": (f"load-{index}-{k}.csv", body, "text/csv")},
                headers={"X-CSRF-Token": csrf}))
            if r is not None and r.status_code == 202:
                sent.append(int(r.json()["id"]))
            await rec.call("GET upload status (api)", client.get("/api/v1/uploads"))


async def _load(base: str, sessions: int, per_session: int, max_seconds: float,
                users: dict[str, list[str]], rec: _Recorder) -> tuple[float, list[int]]:
    deadline = time.monotonic() + max_seconds
    n_up = max(1, sessions // 5)
    roles = ["owner", "merchant", "operator", "merchant", "centre", "admin", "merchant"]
    tasks = []
    sent: list[int] = []
    for i in range(n_up):
        tasks.append(_uploader(base, users["uploader"][i], i, per_session // 2, deadline, rec,
                               sent))
    for i in range(sessions - n_up):
        role = roles[i % len(roles)]
        user = users[role][i % len(users[role])]
        tasks.append(_browser(base, user, role, per_session, deadline, rec))
    t = time.perf_counter()
    await asyncio.gather(*tasks)
    return time.perf_counter() - t, sent


def _percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) if values else np.zeros(1)
    return {"n": float(len(values)), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max()),
            "mean": float(a.mean())}


def run_load_test(*, sessions: int = 50, requests_per_session: int = 40,
                  max_seconds: float = 180.0, demo_customers: int = 3000,
                  out_dir: Path | None = None, console: Any = None) -> LoadResult:
    """Run the load test; returns the measurements (and writes JSON + PNG to ``out_dir``)."""
    say = console.print if console is not None else (lambda *a: None)
    work = Path(tempfile.mkdtemp(prefix="cipherseg-load-"))
    env = {k: v for k, v in os.environ.items() if k != "CIPHERSEG_DATA_DIR"}
    # The recommended production layout: the web process serves, a separate worker process
    # runs imports and the segmentation (whose CKKS work would otherwise compete with the
    # web server for the interpreter).
    env.update({"CIPHERSEG_DATA_DIR": str(work / "data"), "CIPHERSEG_WORKER_THREADS": "0",
                "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "CIPHERSEG_LOGIN_MAX_FAILURES": "50"})
    _run(env, "db", "upgrade")
    n_up = max(1, sessions // 5)
    users: dict[str, list[str]] = {
        "owner": ["mall"], "merchant": [f"shop{i}" for i in range(5)], "operator": ["sms"],
        "centre": ["centre"], "admin": ["root"], "uploader": [f"up{i}" for i in range(n_up)]}
    roles = {"owner": "owner", "merchant": "merchant", "operator": "operator",
             "centre": "centre", "admin": "admin", "uploader": "owner"}
    for group, names in users.items():
        for name in names:
            _run(env, "users", "create", name, "--role", roles[group], stdin=PASSWORD + "\n")
    _run(env, "db", "demo-data", str(work / "demo"), "--customers", str(demo_customers))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "server.log").open("w")
    proc = subprocess.Popen([_cli(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = subprocess.Popen([_cli(), "worker", "--threads", "2"], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(base, proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {work / 'server.log'}") from None
        say(f"server up on {base}; importing {demo_customers} demo customers")
        job_id = asyncio.run(_prepare(base, work / "demo"))
        say(f"segmentation job {job_id} queued; {sessions} sessions start")
        rec = _Recorder()
        seconds, sent = asyncio.run(_load(base, sessions, requests_per_session, max_seconds,
                                          users, rec))
        say("load done; waiting for uploads and the job to finish")
        imported, found, expected, job_status, job_seconds = asyncio.run(
            _verify(base, users["uploader"], sent, job_id))
    finally:
        for p in (worker, proc):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
    # "all": the requests made under load; the 50 logins at the start (one Argon2id hash each,
    # all at once) are reported on their own.
    all_ms = [x for k, v in rec.samples.items() if not k.startswith("POST login") for x in v]
    n_login = len(rec.samples.get("POST login (Argon2id)", []))
    result = LoadResult(
        sessions=sessions, requests=len(all_ms) + n_login + rec.errors, errors=rec.errors,
        seconds=seconds,
        latency_ms={"all": _percentiles(all_ms),
                    **{k: _percentiles(v) for k, v in sorted(rec.samples.items())}},
        uploads_sent=len(sent), uploads_imported=imported, customers_expected=expected,
        customers_found=found, job_status=job_status, job_seconds=job_seconds,
        database=env.get("CIPHERSEG_DATABASE_URL", "sqlite").split(":")[0],
        load_average=list(os.getloadavg()),
        error_samples=rec.error_samples)
    if out_dir is not None:
        _write(out_dir, result, rec)
    return result


async def _prepare(base: str, demo: Path) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        csrf = await _login(client, "mall")
        for kind in ("customers", "transactions"):
            r = await client.post("/api/v1/uploads", data={"kind": kind}, headers={
                "X-CSRF-Token": csrf}, files={"file": (f"{kind}.csv",
                                                       (demo / f"{kind}.csv").read_bytes())})
            r.raise_for_status()
            upload_id = r.json()["id"]
            for _ in range(1200):
                st = (await client.get(f"/api/v1/uploads/{upload_id}")).json()
                if st["status"] in ("imported", "rejected", "failed"):
                    break
                await asyncio.sleep(0.25)
            if st["status"] != "imported":
                raise RuntimeError(f"demo {kind} upload ended {st['status']}: {st['message']}")
        r = await client.post("/api/v1/jobs", json={"k": 4}, headers={"X-CSRF-Token": csrf})
        r.raise_for_status()
        return int(r.json()["id"])


async def _verify(base: str, uploaders: list[str], sent: list[int], job_id: int
                  ) -> tuple[int, int, int, str, float | None]:
    imported = found = 0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for user in uploaders:
            await _login(client, user)
            for _ in range(1200):
                ups = (await client.get("/api/v1/uploads")).json()
                if all(u["status"] in ("imported", "rejected", "failed") for u in ups):
                    break
                await asyncio.sleep(0.25)
            imported += sum(1 for u in ups if u["status"] == "imported")
            n = len((await client.get("/api/v1/customers?limit=1000")).json())
            offset = 1000
            while n == offset:
                more = (await client.get(f"/api/v1/customers?limit=1000&offset={offset}")).json()
                n += len(more)
                offset += 1000
            found += n
            client.cookies.clear()
        await _login(client, "mall")
        job: dict[str, Any] = {}
        for _ in range(2400):
            job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
            if job["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.25)
    seconds = None
    if job.get("result"):
        seconds = float(job["result"].get("seconds", 0.0))
    return imported, found, 20 * len(sent), str(job.get("status")), seconds


def _write(out_dir: Path, result: LoadResult, rec: _Recorder) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "platform_load.json").write_text(json.dumps(result.__dict__, indent=2))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for kind, values in sorted(rec.samples.items()):
        v = np.sort(np.asarray(values))
        ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=f"{kind} (n={len(v)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"cipherseg platform: {result.sessions} sessions while a segmentation runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "platform_load.png", dpi=120)
    plt.close(fig)


def run_import_bench(rows: int = 100_000, customers_for_tx: int = 2_000,
                     out_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """Time validate + import of a ``rows``-row customers file and a ``rows``-row
    transactions file through the API and the worker (SQLite in a temporary directory)."""
    import warnings

    from starlette.testclient import TestClient

    from cipherseg.platform.app import create_app, make_context, make_worker
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.db import make_engine
    from cipherseg.platform.migrate import upgrade
    from cipherseg.platform.models import Role, Upload
    from cipherseg.platform.services.users import create_user

    warnings.simplefilter("ignore", DeprecationWarning)
    out: dict[str, dict[str, float]] = {}
    for n_cust, n_tx in ((rows, 0), (customers_for_tx, rows)):
        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="cipherseg-import-")),
                            environment="test", worker_threads=0)
        upgrade(make_engine(settings.resolved_database_url()))
        ctx = make_context(settings)
        with ctx.sessions() as s:
            create_user(s, "mall", PASSWORD, Role.OWNER)
            s.commit()
        client = TestClient(create_app(context=ctx), follow_redirects=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        client.post("/login", data={"username": "mall", "password": PASSWORD,
                                    "csrf_token": token.group(1) if token else ""})
        csrf = client.get("/api/v1/me").json()["csrf_token"]
        files = {"customers": "customer_id,phone,consent\n" + "".join(
            f"C{i:06d},13{8 + i % 2}{i:08d},yes\n" for i in range(n_cust))}
        if n_tx:
            files["transactions"] = "transaction_id,customer_id,date,amount,category\n" + "".join(
                f"T{i:07d},C{i % n_cust:06d},2025-{1 + i % 12:02d}-{1 + i % 28:02d},"
                f"{1 + i % 500}.{i % 100:02d},food\n" for i in range(n_tx))
        worker = make_worker(ctx, threads=1)
        for kind, body in files.items():
            client.post("/api/v1/uploads", data={"kind": kind}, headers={"X-CSRF-Token": csrf},
                        files={"file": (f"{kind}.csv", body.encode())})
            t = time.perf_counter()
            worker.run_until_empty()
            seconds = time.perf_counter() - t
            with ctx.sessions() as s:
                status = s.query(Upload).order_by(Upload.id.desc()).first().status  # type: ignore[union-attr]
            if status != "imported":
                raise RuntimeError(f"the {kind} import ended {status}")
            n = n_cust if kind == "customers" else n_tx
            if n == rows:
                out[kind] = {"rows": n, "seconds": round(seconds, 2),
                             "rows_per_s": round(n / seconds)}
        ctx.engine.dispose()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "platform_imports.json").write_text(json.dumps(out, indent=2))
    return out
