"""Run a real Kannel (bearerbox + smsbox) on loopback from a generated configuration.

Used by the tests, the benchmark (``cipherseg bench send``) and for trying campaigns
locally. Debian's ``kannel`` package provides ``/usr/sbin/bearerbox`` and
``/usr/sbin/smsbox`` (``scripts/system-deps.sh`` installs it). Every listener is bound to
127.0.0.1 (``admin-interface``, ``smsbox-interface``, ``sendsms-interface``, ``our-host``)
on free ports, and only 127.0.0.1 may connect. The SMSC is either

* ``fake`` — Kannel's fake SMSC inside bearerbox: the handset side connects to its port;
  :class:`FakeSmscClient` is a Python client of that line protocol (it receives every MT
  message and can send MO messages such as "STOP"), or
* ``http`` — Kannel's generic HTTP SMSC, which forwards each message to ``http_smsc_url``
  and treats a body starting ``OK`` as success, ``PERM`` as permanent failure and anything
  else as a rejection (delivery report 16) — used to test failure handling.

Logs are written at level 2 (warnings): at level 1 Kannel logs every recipient number.
Each box runs in its own process group and :meth:`KannelHarness.stop` ends both groups
(after a hard kill of bearerbox, smsbox would keep reconnecting).

Kannel's message store holds every queued message with its number and text in clear (and
its ``.bak`` keeps the previous dump interval's messages). The harness keeps it where
production should: in a directory of its own with mode 0700, written by boxes started with
umask 077, so the store, its ``.new``/``.bak`` rotations and the logs are 0600
(``docs/messaging.md``, "Kannel's message store"). The work directory is 0700 as well.

>>> h = KannelHarness("/tmp/kannel-doc", mo_url="http://127.0.0.1:9/mo?token=x")
>>> "smsc = fake" in h.config_text() and "our-host = 127.0.0.1" in h.config_text()
True
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote_from_bytes, unquote_to_bytes

import httpx

from cipherseg.errors import CipherSegError, ParameterError
from cipherseg.testing.ports import free_ports

BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"


class KannelUnavailable(CipherSegError):
    """Kannel is not installed or did not start."""


def kannel_installed() -> bool:
    """Whether Debian's Kannel binaries are present."""
    return os.access(BEARERBOX, os.X_OK) and os.access(SMSBOX, os.X_OK)


@dataclass(frozen=True, slots=True)
class KannelPorts:
    """The loopback ports of one Kannel instance."""

    admin: int
    smsbox: int
    sendsms: int
    smsc: int


class KannelHarness:
    """bearerbox + smsbox with a fake or HTTP SMSC, configured in ``workdir``.

    Parameters
    ----------
    workdir:
        Directory for the configuration, logs and Kannel's message store.
    smsc:
        ``"fake"`` or ``"http"`` (module docstring).
    http_smsc_url:
        For ``smsc="http"``: where Kannel forwards each message.
    mo_url:
        Kannel calls this for inbound messages (``get-url`` with ``&text=…`` appended; the
        sender in the ``X-Kannel-From`` header, never in the URL).
    throughput:
        Messages per second Kannel lets through to the SMSC (``None``: unlimited).
    """

    def __init__(self, workdir: str | Path, *, smsc: Literal["fake", "http"] = "fake",
                 http_smsc_url: str | None = None, mo_url: str | None = None,
                 throughput: float | None = None, username: str = "cipherseg") -> None:
        if smsc not in ("fake", "http"):
            raise ParameterError("smsc must be 'fake' or 'http'")
        if smsc == "http" and not http_smsc_url:
            raise ParameterError("smsc='http' needs http_smsc_url")
        self.workdir = Path(workdir)
        self.smsc = smsc
        self.http_smsc_url = http_smsc_url
        self.mo_url = mo_url
        self.throughput = throughput
        self.username = username
        self.password = secrets.token_urlsafe(12)
        self._admin_password = secrets.token_urlsafe(12)
        self.ports = KannelPorts(*free_ports(4))
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def __repr__(self) -> str:
        return f"KannelHarness({str(self.workdir)!r}, smsc={self.smsc!r}, ports={self.ports})"

    # ------------------------------------------------------------------ configuration
    @property
    def sendsms_url(self) -> str:
        """The smsbox sendsms URL."""
        return f"http://127.0.0.1:{self.ports.sendsms}/cgi-bin/sendsms"

    @property
    def status_url(self) -> str:
        """bearerbox's status page (XML)."""
        return (f"http://127.0.0.1:{self.ports.admin}/status.xml"
                f"?password={self._admin_password}")

    @property
    def store_dir(self) -> Path:
        """Kannel's message store directory (0700; the store files in it are 0600)."""
        return self.workdir / "store"

    def config_text(self) -> str:
        """The generated ``kannel.conf``."""
        w = self.workdir
        p = self.ports
        lines = [
            "group = core",
            f"admin-port = {p.admin}",
            "admin-interface = 127.0.0.1",
            f"admin-password = \"{self._admin_password}\"",
            f"status-password = \"{self._admin_password}\"",
            "admin-deny-ip = \"*.*.*.*\"",
            "admin-allow-ip = \"127.0.0.1\"",
            f"smsbox-port = {p.smsbox}",
            "smsbox-interface = 127.0.0.1",
            "box-deny-ip = \"*.*.*.*\"",
            "box-allow-ip = \"127.0.0.1\"",
            f"log-file = \"{w / 'bearerbox.log'}\"",
            "log-level = 2",
            "dlr-storage = internal",
            "store-type = file",
            f"store-location = \"{self.store_dir / 'kannel.store'}\"",
            "store-dump-freq = 5",
            "",
            "group = smsc",
            f"smsc = {self.smsc}",
            f"smsc-id = {self.smsc}",
            f"port = {p.smsc}",
            "our-host = 127.0.0.1",
            "connect-allow-ip = \"127.0.0.1\"",
        ]
        if self.throughput:
            lines.append(f"throughput = {self.throughput}")
        if self.smsc == "http":
            lines += [
                "system-type = generic",
                # In the generic send-url %p is the recipient and %P the sender.
                f"send-url = \"{self.http_smsc_url}?to=%p&from=%P&text=%a&coding=%c\"",
                "status-success-regex = \"^OK\"",
                "status-permfail-regex = \"^PERM\"",
            ]
        lines += [
            "",
            "group = smsbox",
            "bearerbox-host = 127.0.0.1",
            f"bearerbox-port = {p.smsbox}",
            f"sendsms-port = {p.sendsms}",
            "sendsms-interface = 127.0.0.1",
            f"log-file = \"{w / 'smsbox.log'}\"",
            "log-level = 2",
            "mo-recode = true",
            "http-request-retry = 5",
            "http-queue-delay = 1",
            "",
            "group = sendsms-user",
            f"username = \"{self.username}\"",
            f"password = \"{self.password}\"",
            "user-deny-ip = \"*.*.*.*\"",
            "user-allow-ip = \"127.0.0.1\"",
            "max-messages = 10",
            "concatenation = true",
            "",
            "group = sms-service",
            "keyword = default",
            "catch-all = true",
        ]
        if self.mo_url:
            # GET with the text in the URL and the sender in X-Kannel-From (send-sender).
            sep = "&" if "?" in self.mo_url else "?"
            lines += [f"get-url = \"{self.mo_url}{sep}text=%a\"", "send-sender = true",
                      "max-messages = 1", "omit-empty = true"]
        else:
            lines += ["text = \"\"", "max-messages = 0"]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ processes
    def start(self, timeout: float = 20.0) -> KannelHarness:
        """Write the configuration, start both boxes and wait until smsbox takes requests."""
        if not kannel_installed():
            raise KannelUnavailable(f"Kannel is not installed ({BEARERBOX} missing); run "
                                    "`sudo bash scripts/system-deps.sh`")
        for private in (self.workdir, self.store_dir):
            private.mkdir(parents=True, exist_ok=True, mode=0o700)
            private.chmod(0o700)
        conf = self.workdir / "kannel.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.config_text())
        conf.chmod(0o600)
        try:
            self._spawn("bearerbox", BEARERBOX, conf)
            self._wait(lambda: self._status_ok(), timeout, "bearerbox's admin port")
            self._spawn("smsbox", SMSBOX, conf)
            self._wait(lambda: self._box_connected(), timeout, "smsbox to connect")
            self._wait(lambda: _port_open(self.ports.sendsms), timeout, "the sendsms port")
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, exe: str, conf: Path) -> None:
        fd = os.open(self.workdir / f"{name}.out", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        out = os.fdopen(fd, "ab")
        try:
            self._procs[name] = subprocess.Popen(
                # -v 2: the console gets warnings and errors only (at the default, debug,
                # Kannel prints every message with its recipient, and runs slower).
                # umask 077: the message store and the logs are created 0600.
                [exe, "-v", "2", str(conf)], cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, umask=0o077)
        finally:
            out.close()

    def _wait(self, check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise KannelUnavailable(f"{name} exited with code {proc.returncode}; see "
                                            f"{self.workdir / (name + '.log')}")
            if check():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise KannelUnavailable(f"timed out after {timeout:.0f} s waiting for {what}; see "
                                f"the logs in {self.workdir}")

    def status(self) -> str:
        """bearerbox's ``status.xml`` (empty string if it does not answer)."""
        try:
            r = httpx.get(self.status_url, timeout=2.0, trust_env=False)
        except httpx.HTTPError:
            return ""
        return r.text if r.status_code == 200 else ""

    def _status_ok(self) -> bool:
        return "<gateway>" in self.status()

    def _box_connected(self) -> bool:
        return "<type>smsbox</type>" in self.status()

    def smsc_online(self) -> bool:
        """Whether the SMSC connection is online (the fake SMSC: a client is connected)."""
        xml = self.status()
        start = xml.find("<smscs>")
        return start >= 0 and "<status>online" in xml[start:]

    def wait_smsc_online(self, timeout: float = 10.0) -> None:
        """Wait until :meth:`smsc_online`."""
        self._wait(self.smsc_online, timeout, "the SMSC to come online")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop bearerbox, then smsbox, each by process group (SIGTERM, then SIGKILL)."""
        for name in ("bearerbox", "smsbox"):
            proc = self._procs.get(name)
            if proc is None:
                continue
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
            # Whatever else the box left in its group (it should be nothing).
            _signal_group(proc, signal.SIGKILL)
        self._procs.clear()

    def __enter__(self) -> KannelHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class FakeSms:
    """A message that reached the fake SMSC: sender, recipient, decoded text."""

    sender: str
    receiver: str
    text: str
    kind: str


def _unquote(data: bytes) -> bytes:
    """Kannel's URL encoding (``octstr_url_encode``): ``+`` is a space, ``%XX`` a byte."""
    return unquote_to_bytes(data.replace(b"+", b" ").decode("ascii"))


def _decode_line(line: bytes) -> FakeSms | None:
    parts = line.rstrip(b"\r\n").split(b" ", 3)
    if len(parts) < 4:
        return None
    sender, receiver, kind, rest = (parts[0].decode(), parts[1].decode(),
                                    parts[2].decode(), parts[3])
    if kind == "text":
        text = rest.decode("utf-8", errors="replace")
    elif kind == "ucs-2":
        text = _unquote(rest).decode("utf-16-be", errors="replace")
    elif kind == "data":
        text = _unquote(rest).decode("utf-8", errors="replace")
    elif kind == "udh":
        _udh, _, data = rest.partition(b" ")
        text = _unquote(data).decode("utf-8", errors="replace")
    else:
        return None
    return FakeSms(sender, receiver, text, kind)


class FakeSmscClient:
    """The handset side of Kannel's fake SMSC: collects MT messages, sends MO messages.

    The line protocol: ``<sender> <receiver> <type> <data>``; MT types are ``text``,
    ``data`` (URL-encoded 8-bit), ``ucs-2`` (URL-encoded UTF-16BE) and ``udh``; MO types
    ``text`` and ``ucs2``. Holds received numbers in memory only (it stands for the phones).
    """

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.received: list[FakeSms] = []
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None

    def connect(self, timeout: float = 10.0) -> FakeSmscClient:
        """Connect (retrying until bearerbox listens) and start collecting messages."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection((self.host, self.port), timeout=2.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise KannelUnavailable(f"the fake SMSC port {self.port} does not "
                                            "accept connections") from None
                time.sleep(0.1)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(self._sock,),
                                        name="fake-smsc", daemon=True)
        self._reader.start()
        return self

    def _read(self, sock: socket.socket) -> None:
        with sock.makefile("rb") as fh:
            for line in fh:
                sms = _decode_line(line)
                if sms is not None:
                    with self._cond:
                        self.received.append(sms)
                        self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[FakeSms]:
        """Wait until at least ``count`` messages arrived; returns all received so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.received)

    def send_mo(self, sender: str, receiver: str, text: str) -> None:
        """Send an inbound message from ``sender`` (non-ASCII text goes as UCS-2)."""
        if self._sock is None:
            raise KannelUnavailable("connect() first")
        if text.isascii() and "\n" not in text:
            line = f"{sender} {receiver} text {text}\n".encode("ascii")
        else:
            data = quote_from_bytes(text.encode("utf-16-be"))
            line = f"{sender} {receiver} ucs2 {data}\n".encode("ascii")
        self._sock.sendall(line)

    def close(self) -> None:
        """Disconnect."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None

    def __enter__(self) -> FakeSmscClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
