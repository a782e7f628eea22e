"""Waiting for a ``cipherseg serve`` that tests and benchmarks start as a subprocess.

>>> import subprocess, sys
>>> proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
>>> wait_healthy("http://127.0.0.1:9", proc, seconds=5)
Traceback (most recent call last):
...
RuntimeError: the server exited with status 3 before answering /healthz
"""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None = None, *,
                 seconds: float = 60.0) -> None:
    """Return once ``base + /healthz`` answers 200; raise :class:`RuntimeError` if ``proc``
    exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before "
                               "answering /healthz")
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer /healthz within {seconds:g} s")


__all__ = ["wait_healthy"]
