"""Every party of a protocol in this process: the one in-process router of the party contract.

:func:`deliver` carries the messages parties return from
:meth:`~cipherseg.protocols.party.Party.handle` to their recipients until none is left, each as
bytes (``to_bytes``/``from_bytes`` every time, so serialisation is exercised and the counts
are what a network carries), in the order they were sent. A message a party cannot take yet
(:class:`~cipherseg.protocols.party.NotReady`) waits and is retried after that party's next
successful ``handle``. A party's refusal (any :class:`~cipherseg.errors.CipherSegError`) stops
the run: ``on_refusal`` is told first (e.g. to abort the others), then it is raised.
:class:`Traffic` counts bytes, wall and CPU seconds per party and stage. A party in a child
process (:class:`cipherseg.transport.pipes.PartyProcess`) is a party like any other here; with
``concurrent=True`` each party handles its messages in a thread of its own (in the order they
were sent to it), so parties in child processes compute at the same time, as they would on
their own machines.

>>> from dataclasses import dataclass
>>> from cipherseg.protocols.messages import define_protocol, register_message
>>> _ = define_protocol("delivery-doc", version=1)
>>> @register_message
... @dataclass(frozen=True, slots=True)
... class Hop(Message):
...     PROTOCOL = "delivery-doc"
...     left: int = 0
>>> class Relay:
...     def __init__(self, name: str, other: str) -> None:
...         self.name, self.other, self.seen = name, other, 0
...     def handle(self, sender: str, message: Message) -> Outgoing:
...         assert isinstance(message, Hop)
...         self.seen += 1
...         if message.left == 0:
...             return []
...         return [(self.other, Hop(protocol_version=1, session_id="s", round=0,
...                                  left=message.left - 1))]
>>> a, b = Relay("a", "b"), Relay("b", "a")
>>> traffic = deliver({"a": a, "b": b}, [("a", "b", Hop(protocol_version=1, session_id="s",
...                                                        round=0, left=3))])
>>> a.seen, b.seen, traffic.messages
(2, 2, 4)
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cipherseg.errors import CipherSegError, ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady, Outgoing, Party

__all__ = ["Traffic", "deliver", "message_type"]


def message_type(message: Message) -> str:
    """The default stage of a message: its type's name."""
    return type(message).__name__


def _row() -> defaultdict[str, float]:
    return defaultdict(float)


def _table() -> defaultdict[str, defaultdict[str, float]]:
    return defaultdict(_row)  # module-level factories: a Traffic pickles (process runners)


@dataclass
class Traffic:
    """Bytes sent and received, handler wall and CPU seconds, per party and stage.

    ``stage_of`` names a message's stage (by default its type). CPU seconds are those of the
    handlers in this process (a party's worker processes or child process are not included).
    """

    stage_of: Callable[[Message], str] = message_type
    sent: defaultdict[str, defaultdict[str, float]] = field(default_factory=_table)
    received: defaultdict[str, defaultdict[str, float]] = field(default_factory=_table)
    seconds: defaultdict[str, defaultdict[str, float]] = field(default_factory=_table)
    cpu: defaultdict[str, defaultdict[str, float]] = field(default_factory=_table)
    messages: int = 0

    def record(self, src: str, dst: str, message: Message, size: int) -> None:
        stage = self.stage_of(message)
        self.sent[src][stage] += size
        self.received[dst][stage] += size
        self.messages += 1

    def handled(self, party: str, message: Message, seconds: float, cpu: float) -> None:
        stage = self.stage_of(message)
        self.seconds[party][stage] += seconds
        self.cpu[party][stage] += cpu

    def total_bytes(self) -> int:
        return int(sum(v for stages in self.sent.values() for v in stages.values()))

    def as_dict(self) -> dict[str, Any]:
        def plain(t: defaultdict[str, defaultdict[str, float]]) -> dict[str, dict[str, float]]:
            return {p: dict(s) for p, s in sorted(t.items())}
        return {"bytes_sent": plain(self.sent), "bytes_received": plain(self.received),
                "seconds": plain(self.seconds), "cpu_seconds": plain(self.cpu),
                "messages": self.messages, "total_bytes": self.total_bytes()}


def deliver(parties: Mapping[str, Party], initial: Iterable[tuple[str, str, Message]],
            traffic: Traffic | None = None, *,
            on_message: Callable[[Message], None] | None = None,
            on_refusal: Callable[[str, Message, CipherSegError], None] | None = None,
            max_messages: int = 10_000_000, concurrent: bool = False) -> Traffic:
    """Carry ``initial`` — (sender, recipient, message) — and every message it leads to, until
    none is left; returns the traffic (``traffic`` if given).

    ``on_message(message)`` is called after each successful ``handle`` (progress);
    ``on_refusal(party, message, error)`` when a party refuses one, before the error is raised.
    Raises :class:`~cipherseg.errors.ProtocolError` for a message to an unknown party, a run
    that does not end within ``max_messages`` deliveries, or messages that never became
    deliverable.

    ``concurrent=True``: one thread per party, each taking the messages sent to it in the
    order they were sent (across parties, in whatever order they finish: the order a network
    gives); ``on_message`` is then called from the handling party's thread. For parties that
    wait on something else — child processes — not for parties computing in this process.
    """
    if concurrent:
        return _deliver_concurrently(parties, initial, traffic, on_message, on_refusal,
                                     max_messages)
    traffic = traffic if traffic is not None else Traffic()
    queue: deque[tuple[str, str, bytes]] = deque()
    waiting: defaultdict[str, list[tuple[str, bytes]]] = defaultdict(list)

    def post(src: str, out: Outgoing) -> None:
        for dst, msg in out:
            if dst not in parties:
                raise ProtocolError(f"{src} sent {type(msg).__name__} to unknown party {dst!r}")
            data = msg.to_bytes()
            traffic.record(src, dst, msg, len(data))
            queue.append((src, dst, data))

    for src, dst, msg in initial:
        post(src, [(dst, msg)])
    handled = 0
    while queue:
        src, dst, data = queue.popleft()
        message = Message.from_bytes(data)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            out = parties[dst].handle(src, message)
        except NotReady:
            waiting[dst].append((src, data))
            continue
        except CipherSegError as exc:
            if on_refusal is not None:
                on_refusal(dst, message, exc)
            raise
        traffic.handled(dst, message, time.perf_counter() - start, time.process_time() - cpu)
        post(dst, out)
        if waiting[dst]:  # its state changed: retry what it could not take before
            queue.extendleft(reversed([(s, dst, d) for s, d in waiting.pop(dst)]))
        if on_message is not None:
            on_message(message)
        handled += 1
        if handled > max_messages:
            raise ProtocolError(f"the protocol did not end within {max_messages} messages")
    stuck = {p: len(w) for p, w in waiting.items() if w}
    if stuck:
        raise ProtocolError(f"messages never became deliverable: {stuck}")
    return traffic


def _deliver_concurrently(parties: Mapping[str, Party],
                          initial: Iterable[tuple[str, str, Message]],
                          traffic: Traffic | None,
                          on_message: Callable[[Message], None] | None,
                          on_refusal: Callable[[str, Message, CipherSegError], None] | None,
                          max_messages: int) -> Traffic:
    """:func:`deliver` with a thread per party (see there)."""
    stats = traffic if traffic is not None else Traffic()
    lock = threading.Condition()
    # (sender, bytes, the message they hold): each message is parsed once here, and a party
    # with ``handle_bytes`` (a child process) gets and returns bytes, never re-serialised
    inbox: dict[str, deque[tuple[str, bytes, Message]]] = {name: deque() for name in parties}
    waiting: defaultdict[str, list[tuple[str, bytes, Message]]] = defaultdict(list)
    busy = handled = 0
    failure: list[tuple[str, Message, BaseException]] = []

    def post(src: str, out: list[tuple[str, bytes, Message]]) -> None:  # holding the lock
        for dst, data, msg in out:
            if dst not in parties:
                raise ProtocolError(f"{src} sent {type(msg).__name__} to unknown party {dst!r}")
            stats.record(src, dst, msg, len(data))
            inbox[dst].append((src, data, msg))
        lock.notify_all()

    def serve(name: str) -> None:
        nonlocal busy, handled
        party = parties[name]
        handle_bytes: Callable[[str, bytes], list[tuple[str, bytes]]] | None = getattr(
            party, "handle_bytes", None)
        while True:
            with lock:
                while not inbox[name] and not failure and (busy or _pending(inbox)):
                    lock.wait()
                if failure or not inbox[name]:
                    lock.notify_all()
                    return
                src, data, message = inbox[name].popleft()
                busy += 1
            try:
                start, cpu = time.perf_counter(), time.process_time()
                try:
                    if handle_bytes is not None:
                        replies = handle_bytes(src, data)
                    else:
                        replies = [(dst, m.to_bytes()) for dst, m in party.handle(src, message)]
                except NotReady:
                    with lock:
                        waiting[name].append((src, data, message))
                        busy -= 1
                        lock.notify_all()
                    continue
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                out = [(dst, d, Message.from_bytes(d)) for dst, d in replies]
                with lock:
                    stats.handled(name, message, seconds, cpu)
                    post(name, out)
                    if waiting[name]:  # its state changed: retry what it could not take
                        inbox[name].extendleft(reversed(waiting.pop(name)))
                    handled += 1
                    if handled > max_messages:
                        raise ProtocolError(f"the protocol did not end within {max_messages} "
                                            "messages")
                if on_message is not None:
                    on_message(message)
            except BaseException as exc:  # the run stops; the caller's thread raises it
                with lock:
                    failure.append((name, message, exc))
                    busy -= 1
                    lock.notify_all()
                return
            with lock:
                busy -= 1
                lock.notify_all()

    with lock:
        for src, dst, msg in initial:
            post(src, [(dst, msg.to_bytes(), msg)])
    threads = [threading.Thread(target=serve, args=(name,), name=f"deliver-{name}", daemon=True)
               for name in parties]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failure:
        name, message, exc = failure[0]
        if isinstance(exc, CipherSegError) and on_refusal is not None:
            on_refusal(name, message, exc)
        raise exc
    stuck = {p: len(w) for p, w in waiting.items() if w}
    if stuck:
        raise ProtocolError(f"messages never became deliverable: {stuck}")
    return stats


def _pending(inbox: Mapping[str, deque[Any]]) -> bool:
    return any(inbox.values())
