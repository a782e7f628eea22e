"""Process pipes: any protocol party in a child process, reached over its stdin/stdout.

This is the party contract (:mod:`cipherseg.protocols.party`) carried over pipes, once for
every protocol. The child runs :func:`serve_party` around a party it built; the parent holds a
:class:`PartyProcess`, which *is* a :class:`~cipherseg.protocols.party.Party` (its
``handle(sender, message)`` returns what the child's party returned), so a router that runs
parties in this process — 4.2's ``deliver``, 4.5's — runs a party in a child process
unchanged. For a request/response protocol, :meth:`PartyProcess.link` is the owner's
:class:`~cipherseg.protocols.party.Link` to it. Frames, both directions::

    frame   : kind (1 byte) | u64 payload length | payload
    request : K = keyword arguments (JSON, the first frame of ``PartyProcess.of``),
              H = hello (status JSON), M = message, Q = quit
    M       : u16 sender length | sender (UTF-8) | message bytes
    reply   : R = result, E = error (``<error class>: <message>``)
    R to M  : u32 count | count × (u16 recipient length | recipient | u64 length | message)

An ``E`` reply raises in the parent: :class:`~cipherseg.protocols.party.NotReady` as itself
(the party's deferral crosses the pipe), a refusal of the party (a :mod:`cipherseg.errors`
class it may send: :data:`REFUSALS`) as that class with the party's label in front, anything
else as :class:`PartyProcessError`. The child is single-threaded, so a process pool it starts
forks from a process without other threads. Children start with an environment stripped of
every ``CIPHERSEG_*`` variable (:func:`environment_without_settings`), optionally as another
OS user, in a temporary working directory, in their own process group (stopped with them).

Any party runs in a child with ``python -m cipherseg.transport.pipes module:factory``: the
child reads the factory's keyword arguments as a JSON ``K`` frame on its stdin — never on its
command line, which any local user can read (``ps``, ``/proc/<pid>/cmdline``), and they may
hold a database URL — imports only ``module``, calls ``factory(**kwargs)`` for the party, and
answers ``H`` with the party's ``status()`` if it has one (:meth:`PartyProcess.of` starts
one). For 4.2 over pipes: one :class:`PartyProcess` per party
(a factory per party role that builds it from JSON-able arguments; key shares are generated
in the child, never passed in), the processes in the router's party table, and delivery as in
process — :class:`NotReady` and refusals arrive as they would in process.

>>> import io
>>> pipe = io.BytesIO()
>>> write_frame(pipe, b"M", b"abc")
>>> pipe.getvalue()
b'M\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00abc'
>>> read_frame(io.BytesIO(pipe.getvalue()))
(b'M', b'abc')
>>> decode_outgoing(b"".join(encode_outgoing([("owner", b"xy"), ("centre", b"")])))
[('owner', b'xy'), ('centre', b'')]
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any

from cipherseg import errors
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import Link, NotReady, Outgoing, Party

_LEN = struct.Struct("<Q")
_NAME = struct.Struct("<H")
_COUNT = struct.Struct("<I")
Payload = bytes | bytearray | memoryview

#: The errors a party may report as its own refusals (the parent raises the same class);
#: anything else is a failure of the party's process.
REFUSALS = ("ProtocolError", "CiphertextError", "KeyCustodyError", "ParameterError",
            "CapabilityError")


class PartyProcessError(RuntimeError):
    """A party's process failed, stopped, or answered an unexpected error."""


# ----------------------------------------------------------------------------- frames
def write_frame(stream: IO[bytes], kind: bytes, *parts: Payload) -> None:
    """Write one frame whose payload is ``parts`` back to back, and flush it. Parts are
    written as they are (no concatenation: messages are tens of MB)."""
    stream.write(kind + _LEN.pack(sum(memoryview(p).nbytes for p in parts)))
    for part in parts:
        stream.write(part)
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


def _read_exact_from(proc: subprocess.Popen[bytes], n: int) -> bytearray:
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
                raise EOFError("the party's process exited")
            continue
        k = os.readv(fd, [view[got:]])
        if k == 0:
            raise EOFError("the other side closed the pipe")
        got += k
    return buf


def _named(name: str) -> bytes:
    raw = name.encode()
    return _NAME.pack(len(raw)) + raw


def _read_name(view: memoryview, at: int) -> tuple[str, int]:
    (n,) = _NAME.unpack_from(view, at)
    at += _NAME.size
    return bytes(view[at:at + n]).decode(), at + n


def encode_outgoing(out: Sequence[tuple[str, Payload]]) -> list[Payload]:
    """The parts of an ``R`` payload for ``(recipient, message bytes)`` pairs."""
    parts: list[Payload] = [_COUNT.pack(len(out))]
    for recipient, data in out:
        parts += [_named(recipient), _LEN.pack(memoryview(data).nbytes), data]
    return parts


def decode_outgoing(payload: Payload) -> list[tuple[str, bytes]]:
    """``(recipient, message bytes)`` pairs of an ``R`` payload (one copy of each message)."""
    view = memoryview(payload)
    try:
        (count,) = _COUNT.unpack_from(view, 0)
        at, out = _COUNT.size, []
        for _ in range(count):
            recipient, at = _read_name(view, at)
            (n,) = _LEN.unpack_from(view, at)
            at += _LEN.size
            if at + n > len(view):
                raise PartyProcessError("a party's reply frame is truncated")
            out.append((recipient, bytes(view[at:at + n])))
            at += n
    except (struct.error, UnicodeDecodeError) as exc:
        raise PartyProcessError(f"a party's reply frame is malformed: {exc}") from exc
    if at != len(view):
        raise PartyProcessError("a party's reply frame has trailing bytes")
    return out


# ----------------------------------------------------------------------------- the child
def serve_party(party: Party, stdin: IO[bytes], stdout: IO[bytes], *,
                status: Callable[[], dict[str, Any]] | None = None) -> None:
    """The child's request loop: each ``M`` frame is one ``party.handle``; ``H`` answers
    ``status()`` as JSON. Returns at ``Q`` or when the parent closes the pipe."""
    while True:
        try:
            kind, payload = read_frame(stdin)
        except EOFError:
            return
        if kind == b"Q":
            write_frame(stdout, b"R")
            return
        try:
            if kind == b"H":
                parts: list[Payload] = [json.dumps(status() if status else {}).encode()]
            elif kind == b"M":
                view = memoryview(payload)
                sender, at = _read_name(view, 0)
                out = party.handle(sender, Message.from_bytes(view[at:]))
                parts = encode_outgoing([(dst, msg.to_bytes()) for dst, msg in out])
            else:
                raise ValueError(f"unknown frame kind {kind!r}")
        except Exception as exc:  # report to the parent; the parent decides
            write_frame(stdout, b"E", f"{type(exc).__name__}: {exc}".encode()[:2000])
            continue
        write_frame(stdout, b"R", *parts)


def protocol_stdout() -> IO[bytes]:
    """In a child: the pipe to the parent, with file descriptor 1 pointed at stderr, so
    anything a library prints cannot corrupt the frames."""
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return proto_out


def environment_without_settings() -> dict[str, str]:
    """This process's environment minus every ``CIPHERSEG_*`` variable (database URL, session
    and PII keys, …): what a party's process is started with."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CIPHERSEG_")}


def read_kwargs(stdin: IO[bytes]) -> dict[str, Any]:
    """In a child: the factory's keyword arguments, the ``K`` frame the parent sends first."""
    kind, payload = read_frame(stdin)
    if kind != b"K":
        raise SystemExit(f"expected the keyword-arguments frame first, got {kind!r}")
    kwargs = json.loads(payload)
    if not isinstance(kwargs, dict):
        raise SystemExit("the keyword-arguments frame is not a JSON object")
    return kwargs


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cipherseg.transport.pipes module:factory``: read the keyword arguments
    (a ``K`` frame on stdin), serve the party ``factory(**kwargs)`` on stdin/stdout until told
    to quit."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or ":" not in args[0]:
        raise SystemExit("usage: python -m cipherseg.transport.pipes module:factory "
                         "(keyword arguments arrive as JSON on stdin)")
    module, _, attr = args[0].partition(":")
    kwargs = read_kwargs(sys.stdin.buffer)
    factory = getattr(importlib.import_module(module), attr)
    out = protocol_stdout()
    party = factory(**kwargs)
    try:
        serve_party(party, sys.stdin.buffer, out, status=getattr(party, "status", None))
    finally:
        close = getattr(party, "close", None)
        if close is not None:
            close()


# ----------------------------------------------------------------------------- the parent
class PartyProcess:
    """A party running in a child process (``python -m module *args``), as a
    :class:`~cipherseg.protocols.party.Party` of this process.

    ``kwargs``, if given, are sent as a JSON ``K`` frame on the child's stdin before anything
    else (never on its command line). Use as a context manager. ``name`` is the party's
    protocol name; ``label`` prefixes its refusals (``"compute centre"`` →
    ``"compute centre: out of order"``)."""

    def __init__(self, module: str, args: Sequence[str] = (), *, name: str, label: str,
                 os_user: str | None = None, kwargs: dict[str, Any] | None = None) -> None:
        self.name = name
        self.kwargs = kwargs
        self.label = label
        self.module = module
        self.args = list(args)
        self.os_user = os_user
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.status: dict[str, Any] = {}

    @classmethod
    def of(cls, factory: str, kwargs: dict[str, Any] | None = None, *, name: str, label: str,
           os_user: str | None = None) -> PartyProcess:
        """The party ``factory(**kwargs)`` (``"module:callable"``, JSON-able ``kwargs``) in a
        child process; the arguments reach it over its stdin."""
        return cls("cipherseg.transport.pipes", [factory], name=name, label=label,
                   os_user=os_user, kwargs=dict(kwargs or {}))

    @property
    def refusal_prefix(self) -> str:
        return f"{self.label}: "

    def __enter__(self) -> PartyProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"cipherseg-{self.name}-")
        if self.os_user:
            os.chmod(self._tmp.name, 0o777)
        kwargs: dict[str, Any] = {}
        if self.os_user:
            kwargs["user"] = self.os_user
        # Its own process group: its pool workers can be stopped with it (see __exit__).
        # Replies are read from the stdout descriptor itself (select + readv, never through
        # the buffered object), see _read_exact_from.
        self._proc = subprocess.Popen([sys.executable, "-m", self.module, *self.args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      env=environment_without_settings(), cwd=self._tmp.name,
                                      start_new_session=True, **kwargs)
        if self.kwargs is not None:
            assert self._proc.stdin is not None
            try:
                write_frame(self._proc.stdin, b"K", json.dumps(self.kwargs).encode())
            except BrokenPipeError as exc:
                raise PartyProcessError(f"the {self.label} process stopped before it "
                                        "started") from exc
        self.status = self.hello()
        return self

    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> None:
        """Stop the child (if it still runs) and start a fresh one: its state is lost."""
        self.__exit__()
        self.__enter__()

    def _call(self, kind: bytes, *parts: Payload) -> bytearray:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise PartyProcessError(f"the {self.label} process is not running")
        try:
            write_frame(proc.stdin, kind, *parts)
            head = _read_exact_from(proc, 1 + _LEN.size)
            rkind, (n,) = bytes(head[:1]), _LEN.unpack(head[1:])
            reply = _read_exact_from(proc, n)
        except (BrokenPipeError, EOFError) as exc:
            # A closed pipe is a dead link even if the kernel has not yet made the exited
            # child reapable (poll() can still say "running" for a moment): end it for good,
            # so alive() is false from here on.
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            raise PartyProcessError(f"the {self.label} process stopped unexpectedly "
                                    f"(exit code {proc.poll()})") from exc
        if rkind == b"E":
            raise self._error(reply.decode(errors="replace"))
        return reply

    def _error(self, text: str) -> Exception:
        """The exception an ``E`` reply stands for."""
        name, _, detail = text.partition(": ")
        if name == "NotReady":
            return NotReady(detail)
        if name in REFUSALS:
            cls: type[Exception] = getattr(errors, name)
            return cls(self.refusal_prefix + detail)
        return PartyProcessError(self.refusal_prefix + text)

    def handle_bytes(self, sender: str, data: Payload) -> list[tuple[str, bytes]]:
        """``sender``'s message bytes to the party; its ``(recipient, bytes)`` replies."""
        return decode_outgoing(self._call(b"M", _named(sender), data))

    def handle(self, sender: str, message: Message) -> Outgoing:
        """The party contract, across the pipe (every message crosses as bytes)."""
        return [(dst, Message.from_bytes(data))
                for dst, data in self.handle_bytes(sender, message.to_bytes())]

    def request_bytes(self, data: Payload, *, sender: str) -> bytes:
        """One request/response step: ``sender``'s request, the single reply to it."""
        out = self.handle_bytes(sender, data)
        if len(out) != 1 or out[0][0] != sender:
            raise errors.ProtocolError(f"{self.refusal_prefix}{len(out)} replies to one "
                                       f"request from {sender!r}; expected exactly one to it")
        return out[0][1]

    def link(self, sender: str) -> Link:
        """The owner's :class:`~cipherseg.protocols.party.Link` to this party, as ``sender``."""
        return _ProcessLink(self, sender)

    def hello(self) -> dict[str, Any]:
        """The child's current status (what its ``status`` callable reports)."""
        status: dict[str, Any] = json.loads(self._call(b"H"))
        return status

    def __exit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None:
            try:
                if proc.poll() is None:
                    self._call(b"Q")
                proc.wait(timeout=10)
            except (PartyProcessError, subprocess.TimeoutExpired, OSError):
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


class _ProcessLink(Link):
    """Request/response bytes to a :class:`PartyProcess`, without re-parsing in between."""

    def __init__(self, process: PartyProcess, sender: str) -> None:
        super().__init__()
        self._process = process
        self.sender = sender

    def _exchange(self, data: bytes) -> bytes:
        return self._process.request_bytes(data, sender=self.sender)


__all__ = [
    "REFUSALS",
    "PartyProcess",
    "PartyProcessError",
    "decode_outgoing",
    "encode_outgoing",
    "environment_without_settings",
    "main",
    "protocol_stdout",
    "read_frame",
    "read_kwargs",
    "serve_party",
    "write_frame",
]


if __name__ == "__main__":
    main()
