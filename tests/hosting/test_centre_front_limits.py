"""The centre front under stalled bodies (issue 16, finding 4): it allocates only what
arrives, limits the bodies arriving per owner, drops a body that stops, and keeps answering
the other owners meanwhile. Runs a real uvicorn server (stalls need a real socket)."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cipherseg.hosting.centre_http import create_centre_app
from cipherseg.protocols.outsourced import messages as p
from cipherseg.testing.ports import free_port
from cipherseg.transport.http import CONTENT_TYPE, MESSAGES_PATH
from cipherseg.transport.tokens import OwnersFile, add_owner

DECLARED = 768 * 1024**2  # each stalled body claims 768 MiB (as in the issue) and sends one byte
STALL_SECONDS = 4.0


class _Centre:
    """A centre link that acknowledges uploads (the front is under test, not the centre)."""

    def request_bytes(self, data: bytes, *, sender: str) -> bytes:
        ack = p.UploadAck(protocol_version=p.VERSION, session_id="s", round=0, n_blocks=1)
        return ack.to_bytes()

    def hello(self) -> dict[str, Any]:
        return {"holds_secret_key": False, "sessions": 0, "modules": []}

    def alive(self) -> bool:
        return True

    def restart(self) -> None:
        raise AssertionError("a live centre is not restarted")


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    path = tmp_path / "owners"
    tokens = {name: add_owner(path, name) for name in ("north", "south")}
    app = create_centre_app(_Centre(), owners=OwnersFile(path), stall_seconds=STALL_SECONDS)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", tokens
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _stalled_body(url: str, token: str) -> socket.socket:
    """A request declaring DECLARED bytes that sends one byte of body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall((f"POST {MESSAGES_PATH} HTTP/1.1\r\nHost: {host}\r\n"
                  f"Authorization: Bearer {token}\r\nContent-Type: {CONTENT_TYPE}\r\n"
                  f"Content-Length: {DECLARED}\r\n\r\nC").encode())
    return sock


def _status_line(sock: socket.socket) -> str:
    return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_stalled_bodies_hold_no_memory_and_no_other_owners_turn(
        service: tuple[str, dict[str, str]]) -> None:
    url, tokens = service
    gc.collect()
    before = _rss_bytes()
    stalled = [_stalled_body(url, tokens["north"]) for _ in range(3)]
    try:
        time.sleep(1.0)  # the front has read the headers and the first byte of each
        grown = _rss_bytes() - before
        assert grown < 50 * 1024**2, f"the front grew by {grown / 1024**2:.0f} MB"
        # The third body exceeds north's arriving bodies: refused at once, not queued.
        assert " 429 " in _status_line(stalled[2]) + " "
        # Another owner is answered meanwhile, within 2 s.
        upload = p.Upload(protocol_version=p.VERSION, session_id="south-1", round=1)
        t = time.perf_counter()
        answer = httpx.post(url + MESSAGES_PATH, content=upload.to_bytes(), timeout=10,
                            headers={"Authorization": f"Bearer {tokens['south']}",
                                     "Content-Type": CONTENT_TYPE})
        assert answer.status_code == 200 and time.perf_counter() - t < 2.0
        # A body that stops arriving is dropped after the stall limit (408), freeing the slot.
        for sock in stalled[:2]:
            sock.settimeout(STALL_SECONDS + 20)
            assert _status_line(sock).startswith("HTTP/1.1 408")
        ok = httpx.post(url + MESSAGES_PATH, content=upload.to_bytes(), timeout=10,
                        headers={"Authorization": f"Bearer {tokens['north']}",
                                 "Content-Type": CONTENT_TYPE})
        assert ok.status_code == 200
    finally:
        for sock in stalled:
            sock.close()
