"""``cipherseg centre serve`` in a child process on a free loopback port.

Used by the transport and platform tests and by ``cipherseg bench transport``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from cipherseg.errors import TransportError
from cipherseg.testing.ports import free_port
from cipherseg.transport.http import HttpTransport
from cipherseg.transport.pipes import environment_without_settings


class CentreService:
    """``cipherseg centre serve`` in a child process on a free loopback port, for benchmarks
    and tests: ``with CentreService(token_file, workers=2) as url: …``. Its environment has no
    ``CIPHERSEG_*`` variable; its log goes to ``token_file + ".log"``. With ``owners_file``
    the service takes one token per owner, and ``token_file`` is one owner's token."""

    def __init__(self, token_file: str | os.PathLike[str], *, workers: int = 1,
                 tls: tuple[str, str] | None = None, startup_seconds: float = 60.0,
                 owners_file: str | os.PathLike[str] | None = None) -> None:
        self.token_file = os.fspath(token_file)
        self.access = ["--owners-file", os.fspath(owners_file)] if owners_file is not None \
            else ["--token-file", self.token_file]
        self.log_path = self.token_file + ".log"
        self.workers = workers
        self.tls = tls  # (certificate file, key file); the certificate also verifies
        self.startup_seconds = startup_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> str:
        port = free_port()
        tls_args = ["--ssl-certfile", self.tls[0], "--ssl-keyfile", self.tls[1]] \
            if self.tls else []
        env = environment_without_settings()
        with open(self.log_path, "ab") as log_file:  # a pipe nobody reads would fill and block
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cipherseg", "centre", "serve", "--port", str(port),
                 *self.access, "--workers", str(self.workers), *tls_args],
                stdout=log_file, stderr=subprocess.STDOUT, env=env)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_seconds
        while True:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    token = f.read().strip()
                with HttpTransport(self.url, token=token,
                                   verify=self.tls[0] if self.tls else True) as probe:
                    probe.status()
                return self.url
            except (OSError, TransportError):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    with open(self.log_path, encoding="utf-8", errors="replace") as f:
                        tail = f.read()[-2000:]
                    raise TransportError(f"the centre service did not start:\n{tail}") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)


__all__ = ["CentreService"]
