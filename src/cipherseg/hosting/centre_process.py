"""Protocol 4.1's compute centre as its own process: public context and ciphertexts only.

The platform's worker (the data owner's side, which holds the CKKS secret key) starts the
centre as a separate operating-system process — optionally as another OS user
(``CIPHERSEG_CENTRE_OS_USER``) — with an environment stripped of every ``CIPHERSEG_*``
variable, so the process has no database URL, no session key and no PII key. It is the
generic party process of :mod:`cipherseg.transport.pipes` around a
:class:`~cipherseg.protocols.outsourced.centre.ComputeCentre` built by :class:`HostedCentre`.

The child's status (``hello``) gives its pid, whether any held context can decrypt, its open
sessions, its workers, and which cipherseg modules it has loaded — tests check that no
key-holding or PII module is among them — after dropping sessions idle for longer than
``session_idle_seconds``. A refusal of the centre comes back as its own
:mod:`cipherseg.errors` class, prefixed ``compute centre:``; a dead child is a
:class:`CentreProcessError`. The HTTP service (:mod:`cipherseg.hosting.centre_http`) relays
to the same child.

>>> with CentreProcess(n_jobs=1) as centre:
...     print(centre.status["holds_secret_key"], centre.status["sessions"])
False 0
"""

from __future__ import annotations

import os
import sys
from typing import Any

from cipherseg.engine.base import Executor
from cipherseg.protocols.messages import Message
from cipherseg.protocols.outsourced.centre import ComputeCentre
from cipherseg.protocols.party import Outgoing
from cipherseg.transport.http import REFUSAL_PREFIX
from cipherseg.transport.pipes import PartyProcess, PartyProcessError, Payload

#: The sender name of the platform's one data owner on a private centre process.
OWNER = "owner"

CentreProcessError = PartyProcessError


class HostedCentre:
    """The centre party in its child process, with its executor and its status report."""

    name = ComputeCentre.name

    def __init__(self, n_jobs: int = 1, engine: str = "local", scheduler: str | None = None,
                 session_idle_seconds: float | None = None) -> None:
        from cipherseg.engine.factory import make_executor

        self.executor: Executor = make_executor(engine, n_jobs, scheduler)
        self.centre = ComputeCentre(executor=self.executor,
                                    session_idle_seconds=session_idle_seconds)

    def handle(self, sender: str, message: Message) -> Outgoing:
        return self.centre.handle(sender, message)

    def status(self) -> dict[str, Any]:
        self.centre.drop_idle_sessions()
        return {
            "pid": os.getpid(),
            "holds_secret_key": self.centre.holds_secret_key(),
            "sessions": len(self.centre.contexts()),
            "workers": self.executor.n_workers,
            "worker_pids": getattr(self.executor, "worker_pids", list)(),
            "modules": sorted(m for m in sys.modules if m.startswith("cipherseg")),
            "env_cipherseg": sorted(k for k in os.environ if k.startswith("CIPHERSEG_")),
        }

    def close(self) -> None:
        self.executor.close()


class CentreProcess(PartyProcess):
    """Starts the compute centre in a child process and relays protocol bytes to it.

    Use as a context manager; :meth:`link` is the data owner's
    :class:`~cipherseg.protocols.party.Link` to it."""

    def __init__(self, n_jobs: int | None = 1, os_user: str | None = None, *,
                 engine: str = "local", scheduler: str | None = None,
                 session_idle_seconds: float | None = None) -> None:
        options: dict[str, Any] = {"n_jobs": n_jobs or 1, "engine": engine}
        if scheduler is not None:
            options["scheduler"] = scheduler
        if session_idle_seconds is not None:
            options["session_idle_seconds"] = session_idle_seconds
        super().__init__("cipherseg.transport.pipes", [f"{__name__}:HostedCentre"],
                         name=ComputeCentre.name, label=REFUSAL_PREFIX.removesuffix(": "),
                         os_user=os_user, kwargs=options)

    def __enter__(self) -> CentreProcess:
        super().__enter__()
        if self.status.get("holds_secret_key"):
            raise CentreProcessError("the compute centre reports a secret key; refusing")
        return self

    def request_bytes(self, data: Payload, *, sender: str = OWNER) -> bytes:
        """Send one protocol message as ``sender``, return the centre's reply."""
        return super().request_bytes(data, sender=sender)


__all__ = ["OWNER", "REFUSAL_PREFIX", "CentreProcess", "CentreProcessError", "HostedCentre"]
