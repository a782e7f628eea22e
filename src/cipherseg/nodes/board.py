"""A service's joint sessions: one hosted sans-IO party per session, a mailbox per remote
party, who last made contact, and how the session ended.

Thread-safe (one lock per session; requests are handled in a thread pool). The party is
driven exactly as :func:`cipherseg.protocols.joint.runner.deliver` drives it: a message that
raises :class:`~cipherseg.protocols.party.NotReady` waits and is retried after the party's
next successful ``handle``. Messages for a remote party go to its mailbox, which it fetches
with long polls (:meth:`HostedSession.poll`); an acknowledged message (a poll ``after`` its
sequence number) is dropped, so a lost poll reply is simply fetched again. Messages for a
party that is itself a service (the manager's messages for the centre) go to ``forward``.

A session fails — and stays failed, answering every request with the reason — when its party
refuses a message, a remote party stops making contact for ``contact_timeout`` seconds, a
mailbox outgrows ``max_mailbox_bytes`` (its party stopped fetching), a forward fails, or a
participant aborts it.

>>> from cipherseg.protocols.messages import Message
>>> class Echo:
...     name = "centre"
...     def handle(self, sender, message):
...         return [(sender, message)]
>>> s = HostedSession("s" * 16, Echo(), remotes=["owner-1"])
>>> s.deliver("owner-1", Message(protocol_version=1, session_id="s" * 16, round=1))
>>> s.poll("owner-1", after=0, wait=0).seq
1
>>> s.abort("owner-1 left"); s.failure
'owner-1 left'
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cipherseg.errors import CipherSegError, ProtocolError
from cipherseg.nodes.wire import JointAborted, clean_reason
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing, Party

log = logging.getLogger("cipherseg.nodes")

Forward = Callable[[str, Message], None]


@dataclass(frozen=True, slots=True)
class Envelope:
    seq: int
    sender: str
    data: bytes


@dataclass(slots=True)
class Mailbox:
    items: deque[Envelope] = field(default_factory=deque)
    next_seq: int = 1
    size: int = 0

    def put(self, sender: str, data: bytes) -> None:
        self.items.append(Envelope(self.next_seq, sender, data))
        self.next_seq += 1
        self.size += len(data)

    def first_after(self, after: int) -> Envelope | None:
        while self.items and self.items[0].seq <= after:
            self.size -= len(self.items.popleft().data)
        return self.items[0] if self.items else None


class HostedSession:
    """One session of a service: its party, the remote parties' mailboxes and contacts.

    ``remotes``: the party names that fetch messages here (and must keep in contact);
    ``forward(recipient, message)`` sends to any other recipient.
    """

    def __init__(self, session_id: str, party: Party, *, remotes: Iterable[str],
                 forward: Forward | None = None, contact_timeout: float = 60.0,
                 max_mailbox_bytes: int = 256 * 1024**2, max_waiting: int = 1024,
                 labels: dict[str, str] | None = None) -> None:
        self.session_id = session_id
        self.labels = labels or {}  # party name -> how people know it (the node's name)
        self.party = party
        self.mailboxes = {name: Mailbox() for name in remotes}
        self.forward = forward
        self.contact_timeout = contact_timeout
        self.max_mailbox_bytes = max_mailbox_bytes
        self.max_waiting = max_waiting
        self.cond = threading.Condition(threading.RLock())
        now = time.monotonic()
        self.started = now
        self.last_contact = dict.fromkeys(self.mailboxes, now)
        self.waiting: list[tuple[str, Message, int]] = []
        self.pending = False  # waiting for its participants to join: no contact checks yet
        self.failure: str | None = None
        self.ended_at: float | None = None
        self.messages_in = 0
        self.bytes_in = 0
        self.bytes_out: dict[str, int] = dict.fromkeys(self.mailboxes, 0)

    # ------------------------------------------------------------------ state
    @property
    def finished(self) -> bool:
        """The party is done (the manager released its model, the centre was closed)."""
        return bool(getattr(self.party, "done", False) or getattr(self.party, "closed", False))

    @property
    def state(self) -> str:
        if self.failure is not None:
            return "aborted"
        if self.pending:
            return "waiting"
        return "finished" if self.finished else "running"

    def label(self, who: str) -> str:
        return self.labels.get(who, who)

    def touch(self, who: str) -> None:
        with self.cond:
            if who in self.last_contact:
                self.last_contact[who] = time.monotonic()

    def _check_open(self) -> None:
        if self.failure is not None:
            raise JointAborted(self.failure)

    # ------------------------------------------------------------------ messages
    def deliver(self, sender: str, message: Message, size: int = 0) -> None:
        """``message`` from ``sender`` to the hosted party; route what it sends."""
        with self.cond:
            self._check_open()
            self.touch(sender)
            self.messages_in += 1
            self.bytes_in += size
            try:
                self._run(sender, message, size)
            except JointAborted:
                raise
            except CipherSegError as exc:
                self._fail(f"the {self.party.name} refused {type(message).__name__} from "
                           f"{self.label(sender)}: {exc}")
                raise
            except Exception as exc:  # a bug or a resource failure: end the session clearly
                log.exception("session %s…: the %s failed", self.session_id[:8], self.party.name)
                self._fail(f"the {self.party.name} failed on {type(message).__name__} from "
                           f"{self.label(sender)} ({type(exc).__name__})")
                raise ProtocolError(self.failure or "") from exc

    def start(self, out: Outgoing) -> None:
        """Begin: contacts count from now; route what the party sends on its own (the
        manager's start)."""
        with self.cond:
            self._check_open()
            self.pending = False
            now = time.monotonic()
            self.last_contact = dict.fromkeys(self.last_contact, now)
            try:
                self._route(out)
            except JointAborted:
                raise
            except Exception as exc:
                self._fail(f"the {self.party.name} could not start the session: {exc}")
                raise JointAborted(self.failure or "") from exc

    def _run(self, sender: str, message: Message, size: int) -> None:
        try:
            out = self.party.handle(sender, message)
        except NotReady:
            held = sum(n for _, _, n in self.waiting) + size
            if len(self.waiting) >= self.max_waiting or held > self.max_mailbox_bytes:
                raise ProtocolError(f"too many messages ({len(self.waiting) + 1}, {held:,} "
                                    "bytes) waiting for their predecessors") from None
            self.waiting.append((sender, message, size))
            return
        self._route(out)
        while self.waiting:  # the party's state changed: retry what it could not take
            pending, self.waiting = self.waiting, []
            progressed = False
            for s, m, n in pending:
                try:
                    out = self.party.handle(s, m)
                except NotReady:
                    self.waiting.append((s, m, n))
                    continue
                progressed = True
                self._route(out)
            if not progressed:
                break

    def _route(self, out: Outgoing) -> None:
        for recipient, message in out:
            data = message.to_bytes()
            box = self.mailboxes.get(recipient)
            if box is not None:
                box.put(self.party.name, data)
                self.bytes_out[recipient] += len(data)
                if box.size > self.max_mailbox_bytes:
                    raise JointAborted(self._fail(
                        f"{self.label(recipient)} stopped fetching its messages "
                        f"({box.size:,} bytes waiting)"))
            elif self.forward is not None:
                self.forward(recipient, message)
            else:
                raise ProtocolError(f"{self.party.name} sent {type(message).__name__} to "
                                    f"{recipient!r}, who is not in this session")
        self.cond.notify_all()

    def poll(self, who: str, *, after: int, wait: float) -> Envelope | None:
        """The first message for ``who`` after sequence number ``after`` (acknowledging
        those before), waiting up to ``wait`` seconds; None if none came. A failed session
        raises :class:`JointAborted` with its reason."""
        deadline = time.monotonic() + wait
        with self.cond:
            box = self.mailboxes[who]
            while True:
                self.last_contact[who] = time.monotonic()
                self._check_open()
                item = box.first_after(after)
                if item is not None or self.finished:
                    return item
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(timeout=min(left, 1.0))

    # ------------------------------------------------------------------ ending
    def _fail(self, reason: str) -> str:
        if self.failure is None:
            self.failure = clean_reason(reason)
            self.ended_at = time.monotonic()
            log.warning("session %s… ended: %s", self.session_id[:8], self.failure)
            self.cond.notify_all()
        return self.failure

    def abort(self, reason: str) -> None:
        """End the session on a failure (idempotent: the first reason stays)."""
        with self.cond:
            if not self.finished:
                self._fail(reason)

    def check_contacts(self, now: float | None = None) -> None:
        """Fail the session if a remote party has not made contact for too long."""
        now = time.monotonic() if now is None else now
        with self.cond:
            if self.failure is not None or self.finished:
                if self.ended_at is None:
                    self.ended_at = now
                return
            if self.pending:
                return
            for who, seen in self.last_contact.items():
                if now - seen > self.contact_timeout:
                    self._fail(f"{self.label(who)} stopped responding (no contact for "
                               f"{now - seen:.0f} s); the joint job is ended and nothing is "
                               "released")
                    return
