"""The compute centre as its own process: public context and ciphertexts only.

The platform's worker (the data owner's side, which holds the CKKS secret key) starts this
module as a separate operating-system process — optionally as another OS user
(``CIPHERSEG_CENTRE_OS_USER``) — with an environment stripped of every ``CIPHERSEG_*``
variable, so the process has no database URL, no session key and no PII key. It speaks
protocol 4.1 messages over its stdin/stdout as length-prefixed frames::

    request : kind (1 byte: H=hello, M=message, Q=quit) | u64 length | payload
    reply   : kind (1 byte: R=result, E=error)           | u64 length | payload

``H`` answers a JSON status (pid, whether any held context can decrypt, open sessions, and
which cipherseg modules the process has loaded — tests check that no key-holding or PII
module is among them) after dropping sessions idle for longer than ``--session-idle-seconds``.
An ``E`` reply is ``<error class>: <message>``; :class:`CentreProcess` raises a refusal of
the centre (a :mod:`cipherseg.errors` class it may send: :data:`CENTRE_ERRORS`) as that class.
The child is single-threaded, so its process pool forks from a process without other
threads. This module itself imports nothing from the platform; the HTTP service
(:mod:`cipherseg.transport.http_server`) relays to the same child.

>>> import io
>>> pipe = io.BytesIO()
>>> write_frame(pipe, b"M", b"abc")
>>> pipe.getvalue()
b'M\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00abc'
>>> read_frame(io.BytesIO(pipe.getvalue()))
(b'M', b'abc')
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
from typing import IO, Any

_LEN = struct.Struct("<Q")
Payload = bytes | bytearray | memoryview


def write_frame(stream: IO[bytes], kind: bytes, payload: Payload) -> None:
    """Write one frame of the centre's stdin/stdout protocol and flush it. The payload is
    written as it is (no concatenation: messages are tens of MB)."""
    stream.write(kind + _LEN.pack(memoryview(payload).nbytes))
    stream.write(payload)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """Read one frame: (kind, payload)."""
    head = _read_exact(stream, 1 + _LEN.size)
    (n,) = _LEN.unpack(head[1:])
    return head[:1], _read_exact(stream, n)


def _read_exact_from(proc: subprocess.Popen[bytes], n: int) -> bytes:
    """``n`` bytes of the child's stdout, or EOFError once the child has exited.

    The child's pool workers inherit its stdout, so a killed child does not close the pipe:
    waiting for end-of-file would wait forever. Poll the child instead."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            if proc.poll() is not None:
                raise EOFError("the centre process exited")
            continue
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError("the other side closed the pipe")
        got += k
    return bytes(buf)


#: How the owner's side prefixes the centre's messages.
REFUSAL_PREFIX = "compute centre: "
#: The errors a centre may report as its own refusals; anything else is a failure.
CENTRE_ERRORS = ("ProtocolError", "CiphertextError", "KeyCustodyError", "ParameterError",
                 "CapabilityError")


def serve(stdin: IO[bytes], stdout: IO[bytes], n_jobs: int | None, *, engine: str = "local",
          scheduler: str | None = None, session_idle_seconds: float | None = None) -> None:
    """The centre's request loop (runs in the child process)."""
    from cipherseg.engine.factory import make_executor
    from cipherseg.parties.compute_centre import ComputeCentre

    executor = make_executor(engine, n_jobs, scheduler)
    centre = ComputeCentre(executor=executor, session_idle_seconds=session_idle_seconds)
    try:
        while True:
            try:
                kind, payload = read_frame(stdin)
            except EOFError:
                return
            if kind == b"Q":
                write_frame(stdout, b"R", b"")
                return
            try:
                if kind == b"H":
                    centre.drop_idle_sessions()
                    status = {
                        "pid": os.getpid(),
                        "holds_secret_key": centre.holds_secret_key(),
                        "sessions": len(centre.contexts()),
                        "workers": executor.n_workers,
                        "worker_pids": getattr(executor, "worker_pids", list)(),
                        "modules": sorted(m for m in sys.modules if m.startswith("cipherseg")),
                        "env_cipherseg": sorted(k for k in os.environ
                                                if k.startswith("CIPHERSEG_")),
                    }
                    reply = b"R", json.dumps(status).encode()
                elif kind == b"M":
                    reply = b"R", centre.handle_bytes(payload)
                else:
                    reply = b"E", f"unknown frame kind {kind!r}".encode()
            except Exception as exc:  # report to the owner; the owner decides
                reply = b"E", f"{type(exc).__name__}: {exc}".encode()[:2000]
            write_frame(stdout, *reply)
    finally:
        executor.close()


class CentreProcessError(RuntimeError):
    """The compute-centre process failed, stopped, or answered an unexpected error."""


class CentreProcess:
    """Starts the compute centre in a child process and relays protocol bytes to it.

    Use as a context manager; :meth:`request_bytes` is the handler for an
    :class:`~cipherseg.transport.inprocess.InProcessTransport`.
    """

    def __init__(self, n_jobs: int | None = 1, os_user: str | None = None, *,
                 engine: str = "local", scheduler: str | None = None,
                 session_idle_seconds: float | None = None) -> None:
        self.n_jobs = n_jobs
        self.os_user = os_user
        self.options = ["--engine", engine]
        if scheduler is not None:
            self.options += ["--scheduler", scheduler]
        if session_idle_seconds is not None:
            self.options += ["--session-idle-seconds", str(session_idle_seconds)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.status: dict[str, Any] = {}

    def __enter__(self) -> CentreProcess:
        env = environment_without_settings()
        self._tmp = tempfile.TemporaryDirectory(prefix="cipherseg-centre-")
        if self.os_user:
            os.chmod(self._tmp.name, 0o777)
        cmd = [sys.executable, "-m", "cipherseg.transport.centre_process",
               "--n-jobs", str(self.n_jobs or 1), *self.options]
        kwargs: dict[str, Any] = {}
        if self.os_user:
            kwargs["user"] = self.os_user
        # Its own process group: its pool workers can be stopped with it (see __exit__).
        # Replies are read from the stdout descriptor itself (select + readv, never through
        # the buffered object), see _read_exact_from.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=env, cwd=self._tmp.name, start_new_session=True,
                                      **kwargs)
        self.status = json.loads(self._call(b"H", b""))
        if self.status.get("holds_secret_key"):
            raise CentreProcessError("the compute centre reports a secret key; refusing")
        return self

    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        """Stop the child (if it still runs) and start a fresh one: every session is lost."""
        self.__exit__()
        self.__enter__()

    def _call(self, kind: bytes, payload: Payload) -> bytes:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise CentreProcessError("the compute centre process is not running")
        try:
            write_frame(proc.stdin, kind, payload)
            head = _read_exact_from(proc, 1 + _LEN.size)
            rkind, (n,) = head[:1], _LEN.unpack(head[1:])
            reply = _read_exact_from(proc, n)
        except (BrokenPipeError, EOFError) as exc:
            # A closed pipe is a dead link even if the kernel has not yet made the exited
            # child reapable (poll() can still say "running" for a moment): end it for good,
            # so alive() is false from here on.
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            raise CentreProcessError("the compute centre process stopped unexpectedly "
                                     f"(exit code {proc.poll()})") from exc
        if rkind == b"E":
            raise _centre_error(reply.decode(errors="replace"))
        return reply

    def request_bytes(self, data: Payload) -> bytes:
        """Send one protocol message, return the centre's reply."""
        return self._call(b"M", data)

    def hello(self) -> dict[str, Any]:
        """The centre's current status (pid, custody, loaded modules)."""
        status: dict[str, Any] = json.loads(self._call(b"H", b""))
        return status

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None:
            try:
                if proc.poll() is None:
                    self._call(b"Q", b"")
                proc.wait(timeout=10)
            except (CentreProcessError, subprocess.TimeoutExpired, OSError):
                proc.kill()
                proc.wait(timeout=10)
            finally:
                # Pool workers of a child that was killed outlive it: stop its whole group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        with contextlib.suppress(OSError):  # unflushed bytes to a dead child
                            pipe.close()
        if self._tmp is not None:
            self._tmp.cleanup()
        self._proc = None


def environment_without_settings() -> dict[str, str]:
    """This process's environment minus every ``CIPHERSEG_*`` variable (database URL, session
    and PII keys, …): what a centre process is started with."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}


def _centre_error(text: str) -> Exception:
    """The exception an ``E`` reply stands for: the centre's refusal as its own class."""
    from cipherseg import errors

    name, _, detail = text.partition(": ")
    if name in CENTRE_ERRORS:
        cls: type[Exception] = getattr(errors, name)
        return cls(REFUSAL_PREFIX + detail)
    return CentreProcessError(REFUSAL_PREFIX + text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cipherseg compute centre (stdin/stdout)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--scheduler", default=None)
    parser.add_argument("--session-idle-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    # The protocol owns the original stdout; anything a library prints goes to stderr.
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, proto_out, args.n_jobs, engine=args.engine,
          scheduler=args.scheduler, session_idle_seconds=args.session_idle_seconds)


if __name__ == "__main__":
    main()
