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
