"""Platform nodes for tests and ``cipherseg bench joint``: each a ``cipherseg serve``
process with its own data directory (its own SQLite file, keys, log), an owner ``mall``
and a merchant ``shop``, set up as a node of the joint services.

>>> NodeHandle.__name__
'NodeHandle'
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cipherseg.testing.joint_services import JointServices
from cipherseg.testing.ports import free_port
from cipherseg.testing.server import wait_healthy

PASSWORD = "a long node passphrase 42"


def _cli() -> list[str]:
    return [sys.executable, "-m", "cipherseg"]


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


@dataclass
class NodeHandle:
    name: str
    url: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    env: dict[str, str]

    def client(self, username: str = "mall") -> NodeClient:
        return NodeClient(self.url, username)


class NodeClient:
    """A logged-in user of one node's platform (session cookie + CSRF header)."""

    def __init__(self, url: str, username: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=120)
        page = self.http.get("/login")
        m = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert m is not None, page.text[:500]
        r = self.http.post("/login", data={"username": username, "password": PASSWORD,
                                           "csrf_token": m.group(1)})
        if r.status_code != 303:
            raise RuntimeError(f"login as {username} failed: {r.status_code}")
        self.csrf = self.http.get("/api/v1/me").json()["csrf_token"]

    def get(self, path: str) -> Any:
        r = self.http.get(path)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body, headers={"X-CSRF-Token": self.csrf})

    def upload(self, kind: str, content: bytes) -> dict[str, Any]:
        r = self.http.post("/api/v1/uploads", data={"kind": kind},
                           files={"file": (f"{kind}.csv", content, "text/csv")},
                           headers={"X-CSRF-Token": self.csrf})
        r.raise_for_status()
        number = r.json()["id"]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            up: dict[str, Any] = self.get(f"/api/v1/uploads/{number}")
            if up["status"] not in ("queued", "running", "validating", "importing"):
                if up["status"] != "imported":
                    raise RuntimeError(f"upload {kind} ended {up['status']}: {up}")
                return up
            time.sleep(0.2)
        raise RuntimeError("upload did not finish")

    def close(self) -> None:
        self.http.close()


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    out = subprocess.run([*_cli(), *args], env=env, input=stdin, capture_output=True,
                         text=True, timeout=300, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cipherseg {' '.join(args)} failed: {out.stderr[-2000:]}")


@contextmanager
def platform_node(workdir: Path, name: str, services: JointServices, *,
                  contact_seconds: float = 60.0) -> Iterator[NodeHandle]:
    """Set up and serve node ``name`` in ``workdir/name`` until the block ends."""
    data = workdir / name
    data.mkdir(parents=True)
    tokens = {}
    for what, token in (("manager", services.manager_tokens[name]),
                        ("centre", services.centre_tokens[name])):
        path = workdir / f"{name}-{what}.token"  # outside the node's data dir, as handed over
        path.write_text(token + "\n")
        path.chmod(0o600)
        tokens[what] = str(path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}
    env.update({"CIPHERSEG_DATA_DIR": str(data), "CIPHERSEG_WORKER_THREADS": "1",
                "CIPHERSEG_WORKER_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1",
                "CIPHERSEG_NODE_NAME": name,
                "CIPHERSEG_NODE_MANAGER_URL": services.manager_url,
                "CIPHERSEG_NODE_MANAGER_TOKEN_FILE": tokens["manager"],
                "CIPHERSEG_NODE_CENTRE_URL": services.centre_url,
                "CIPHERSEG_NODE_CENTRE_TOKEN_FILE": tokens["centre"],
                "CIPHERSEG_NODE_CONTACT_SECONDS": str(contact_seconds)})
    _run(env, "db", "upgrade")
    _run(env, "users", "create", "mall", "--role", "owner", stdin=PASSWORD + "\n")
    _run(env, "users", "create", "shop", "--role", "merchant", stdin=PASSWORD + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*_cli(), "serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(url, proc, seconds=120)
        yield NodeHandle(name, url, data, log, proc, env)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


__all__ = ["PASSWORD", "NodeClient", "NodeHandle", "csv_bytes", "platform_node"]
