"""Shared pieces of the browser tests: Debian's chromium driven by Playwright against
``cipherseg serve`` started as a subprocess on a free loopback port, each test's server on
its own data directory (a fresh database). The ``browser`` fixture is in ``conftest.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cipherseg.testing.ports import free_port
from cipherseg.testing.server import wait_healthy

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artefacts" / "screenshots"
CLI = str(Path(sys.executable).with_name("cipherseg"))


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    """Run ``cipherseg ARGS`` with ``env``; fails the test on a non-zero exit."""
    out = subprocess.run([CLI, *args], env=env, input=stdin,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def platform_env(data: Path, **settings: str) -> dict[str, str]:
    """The environment of a platform on ``data`` (no CIPHERSEG_* from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    env.update({"CIPHERSEG_DATA_DIR": str(data), "CIPHERSEG_WORKER_THREADS": "1",
                "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1"})
    env.update({f"CIPHERSEG_{k.upper()}": v for k, v in settings.items()})
    return env


@contextmanager
def serve(env: dict[str, str], log_path: Path, *, port: int | None = None) -> Iterator[str]:
    """``cipherseg serve`` on a loopback port (a free one unless given) until the block
    ends; yields its URL."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail("chromium is missing: run `bash scripts/system-deps.sh` (make test does)")
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen([CLI, "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                wait_healthy(base, proc, seconds=30)
            except RuntimeError as exc:
                pytest.fail(f"{exc}:\n{log_path.read_text()}")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class BrowserSession:
    """One browser context logged in as one user, collecting console errors and HTML."""

    def __init__(self, browser, base: str, passwords: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 860},
                                       accept_downloads=True)
        self.page = self.ctx.new_page()
        self.base = base
        self.passwords = passwords
        self.errors: list[str] = []
        self.html: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def go(self, path: str) -> None:
        self.page.goto(self.base + path)
        self.keep()

    def keep(self) -> None:
        self.html.append(self.page.content())

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.keep()
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def login(self, username: str, password: str | None = None, *,
              expect_ok: bool = True) -> None:
        self.go("/login")
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password or self.passwords[username])
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        if expect_ok:
            assert "/login" not in self.page.url, self.page.content()

    def submit(self, selector: str) -> None:
        """Click a submit button and wait for the page it leads to."""
        with self.page.expect_navigation():
            self.page.click(selector)
        self.keep()

    def csrf(self) -> str:
        token = self.page.get_attribute("input[name=csrf_token]", "value")
        assert token
        return token

    def close(self) -> None:
        self.ctx.close()


def prepare_release(env: dict[str, str], customers: list[list[str]],
                    segments: list[tuple[str, int]], *, merchant: str = "shop",
                    ) -> dict[int, list[str]]:
    """Import ``customers`` through the upload pipeline as the owner ``mall``, then store a
    finished segmentation granted to ``merchant`` whose segments take the customers in
    order (``segments``: each one's name and size) — in-process, on the server's database,
    before it starts. Returns each segment's external customer ids."""
    import csv
    import io

    from sqlalchemy import select

    from cipherseg.platform.app import make_context, make_worker
    from cipherseg.platform.core.config import Settings
    from cipherseg.platform.models import (
        Customer,
        Job,
        ReleaseGrant,
        Segment,
        SegmentMember,
        User,
    )
    from cipherseg.platform.numbering import job_scope, next_number
    from cipherseg.platform.services.uploads import save_upload

    centroid = {"recency_days": 12.0, "frequency": 6.0, "monetary": 180.0}
    ctx = make_context(Settings(data_dir=Path(env["CIPHERSEG_DATA_DIR"])))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(
        [["customer_id", "phone", "consent", "first_name", "timezone"], *customers])
    with ctx.sessions() as s:
        owner = s.scalars(select(User).where(User.username == "mall")).one()
        save_upload(ctx, s, owner, "customers", "customers.csv",
                    io.BytesIO(buf.getvalue().encode()))
    make_worker(ctx, threads=1).run_until_empty()
    with ctx.sessions() as s:
        rows = list(s.execute(select(Customer.id, Customer.external_id)
                              .order_by(Customer.external_id)))
        assert len(rows) == len(customers)
        owner_id = s.scalars(select(User.id).where(User.username == "mall")).one()
        job = Job(kind="segmentation", status="done", progress=1.0, stage="done",
                  owner_id=owner_id, created_by=owner_id, params={"k": len(segments)},
                  result={"n_customers": len(rows)},
                  number=next_number(s, job_scope("segmentation", owner_id)))
        s.add(job)
        s.flush()
        s.add(ReleaseGrant(job_id=job.id, granted_by=owner_id, merchant_id=s.scalars(
            select(User.id).where(User.username == merchant)).one()))
        groups: dict[int, list[tuple[int, str]]] = {}
        start = 0
        for pos, (name, size) in enumerate(segments):
            groups[pos] = [(int(cid), str(ext)) for cid, ext in rows[start:start + size]]
            start += size
            s.add(Segment(job_id=job.id, position=pos, name=name, size=len(groups[pos]),
                          centroid=centroid))
            s.add_all(SegmentMember(job_id=job.id, customer_id=cid, pseudonym=f"p{cid}",
                                    segment_index=pos) for cid, _ in groups[pos])
        s.commit()
    ctx.engine.dispose()
    return {pos: [ext for _, ext in members] for pos, members in groups.items()}
