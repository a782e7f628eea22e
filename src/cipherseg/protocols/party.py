"""The one party contract every protocol follows, and the owner's end of a conversation.

**Parties are sans-IO state machines.** A party of any protocol (4.1 outsourced, 4.2 joint,
4.3 scoring, 4.4 seed, 4.5 vertical) is an object with a ``name`` and one method::

    handle(sender: str, message: Message) -> Outgoing    # Outgoing = [(recipient, message)]

It reads one message from the party named ``sender`` and returns the messages it sends in
response, each addressed by party name. It opens no socket, spawns no process, sleeps on
nothing: moving bytes is the transports' job (:mod:`cipherseg.transport`), and they adapt to
this contract once for every protocol. A party that receives a message before one it depends
on (from another sender) raises :class:`NotReady`; the transport delivers it again after the
party's next successful ``handle``. Anything else wrong with a message — out of order, of
another session, malformed — is a :class:`~cipherseg.errors.ProtocolError`.

**Request/response protocols** (the outsourced centre, the scoring centre, the seed centre)
answer each message with exactly one message to its sender; :func:`respond` is that step, and
servers (HTTP, process pipes) call it on every request.

**The owner's driver reads as the message sequence.** A driver talks to its server party
through a :class:`Link` and states the reply it expects at each step::

    scores = link.request(Centroids(...), expect=Scores)

A reply of another type, of another session, or no reply at all raises
:class:`~cipherseg.errors.ProtocolError` naming the request, what was expected and what came.
Every message crosses a :class:`Link` as bytes (``to_bytes``/``from_bytes``), so
serialisation is always exercised and :attr:`Link.stats` counts what a network carries.

>>> from dataclasses import dataclass
>>> from cipherseg.protocols.messages import define_protocol, register_message
>>> _ = define_protocol("party-doc", version=1)
>>> @register_message
... @dataclass(frozen=True, slots=True)
... class Ask(Message):
...     PROTOCOL = "party-doc"
...     n: int = 0
>>> @register_message
... @dataclass(frozen=True, slots=True)
... class Answer(Message):
...     PROTOCOL = "party-doc"
...     n: int = 0
>>> class Doubler:
...     name = "centre"
...     def handle(self, sender: str, message: Message) -> Outgoing:
...         if not isinstance(message, Ask):
...             raise ProtocolError(f"unexpected {type(message).__name__}")
...         return [(sender, Answer(protocol_version=1, session_id=message.session_id,
...                                 round=message.round, n=2 * message.n))]
>>> link = PartyLink(Doubler(), sender="owner")
>>> link.request(Ask(protocol_version=1, session_id="s", round=1, n=21), expect=Answer).n
42
>>> link.request(Ask(protocol_version=1, session_id="s", round=2), expect=Ask)
Traceback (most recent call last):
...
cipherseg.errors.ProtocolError: expected Ask in reply to Ask (session 's'), got Answer
>>> link.stats.messages
2
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message

__all__ = [
    "Link",
    "NotReady",
    "Outgoing",
    "Party",
    "PartyLink",
    "TransferStats",
    "expect_reply",
    "respond",
    "single_reply",
]

Outgoing = list[tuple[str, Message]]
"""What :meth:`Party.handle` returns: ``(recipient name, message)`` pairs, in send order."""

R = TypeVar("R", bound=Message)


class NotReady(Exception):
    """A message arrived before one it depends on (from another sender): deliver it later.

    Raised by :meth:`Party.handle` *before* it changes any state; the transport keeps the
    message and retries it after the party's next successful ``handle``."""


@runtime_checkable
class Party(Protocol):
    """A protocol party: a name and a sans-IO message handler."""

    name: str

    def handle(self, sender: str, message: Message) -> Outgoing:
        """The messages this party sends after reading ``message`` from ``sender``."""
        ...


def expect_reply(reply: Message, expect: type[R] | tuple[type[R], ...], *,
                 request: Message) -> R:
    """``reply`` if it is an ``expect`` of ``request``'s session, else :class:`ProtocolError`.

    >>> from cipherseg.protocols.messages import Message
    >>> m = Message(protocol_version=1, session_id="a", round=1)
    >>> expect_reply(m, Message, request=m) is m
    True
    >>> expect_reply(Message(protocol_version=1, session_id="b", round=1), Message, request=m)
    Traceback (most recent call last):
    ...
    cipherseg.errors.ProtocolError: reply to Message is for session 'b', not 'a'
    """
    if not isinstance(reply, expect):
        wanted = (" or ".join(t.__name__ for t in expect) if isinstance(expect, tuple)
                  else expect.__name__)
        raise ProtocolError(
            f"expected {wanted} in reply to {type(request).__name__} "
            f"(session {request.session_id!r}), got {type(reply).__name__}"
        )
    if reply.session_id != request.session_id:
        raise ProtocolError(
            f"reply to {type(request).__name__} is for session {reply.session_id!r}, "
            f"not {request.session_id!r}"
        )
    return reply


def single_reply(out: Outgoing, *, to: str, request: Message) -> Message:
    """The one message of ``out``, which must be addressed to ``to`` (a request/response step).

    >>> m = Message(protocol_version=1, session_id="a", round=1)
    >>> single_reply([("owner", m)], to="owner", request=m) is m
    True
    >>> single_reply([], to="owner", request=m)
    Traceback (most recent call last):
    ...
    cipherseg.errors.ProtocolError: Message from 'owner' got 0 replies; expected exactly one to it
    """
    if len(out) != 1 or out[0][0] != to:
        raise ProtocolError(f"{type(request).__name__} from {to!r} got {len(out)} replies; "
                            "expected exactly one to it")
    return out[0][1]


def respond(party: Party, sender: str, data: bytes | bytearray | memoryview) -> bytes:
    """One request/response step on bytes: parse, ``handle``, return the single reply's bytes.

    Servers of request/response protocols (in-process, process pipes, HTTP) call this and
    nothing protocol-specific. Errors the party raises propagate to the caller."""
    message = Message.from_bytes(bytes(data))
    reply = single_reply(party.handle(sender, message), to=sender, request=message)
    return reply.to_bytes()


@dataclass(slots=True)
class TransferStats:
    """Bytes and messages in each direction (client = the requesting owner, server = the
    party it talks to), and bytes per request type (request + reply)."""

    bytes_to_server: int = 0
    bytes_to_client: int = 0
    messages: int = 0
    per_type: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> tuple[int, int]:
        return self.bytes_to_server, self.bytes_to_client


class Link(ABC):
    """The requesting party's end of a request/response conversation, counted in bytes.

    Subclasses move bytes (:meth:`_exchange`): in this process (:class:`PartyLink`), over
    process pipes or over HTTP (:mod:`cipherseg.transport`). Drivers only call
    :meth:`request`."""

    def __init__(self) -> None:
        self.stats = TransferStats()

    @abstractmethod
    def _exchange(self, data: bytes) -> bytes:
        """Deliver ``data`` to the other party and return its reply (raise on failure)."""

    def request_bytes(self, data: bytes) -> bytes:
        """Send request bytes, return reply bytes, counting both."""
        self.stats.bytes_to_server += len(data)
        reply = self._exchange(data)
        self.stats.bytes_to_client += len(reply)
        self.stats.messages += 1
        return reply

    def exchange(self, message: Message) -> Message:
        """Send ``message`` and return whatever reply comes back (parsed, unchecked)."""
        data = message.to_bytes()
        reply = self.request_bytes(data)
        name = type(message).__name__
        self.stats.per_type[name] = self.stats.per_type.get(name, 0) + len(data) + len(reply)
        return Message.from_bytes(reply)

    def request(self, message: Message, expect: type[R] | tuple[type[R], ...]) -> R:
        """Send ``message``; return the reply if it is an ``expect`` of the same session,
        else raise :class:`~cipherseg.errors.ProtocolError`."""
        return expect_reply(self.exchange(message), expect, request=message)

    def close(self) -> None:  # noqa: B027 - optional hook: most links hold nothing
        """Release connections (nothing to release by default)."""


class PartyLink(Link):
    """A :class:`Link` to a party in this process, as ``sender``; messages cross as bytes."""

    def __init__(self, party: Party, *, sender: str) -> None:
        super().__init__()
        self.party = party
        self.sender = sender

    def _exchange(self, data: bytes) -> bytes:
        return respond(self.party, self.sender, data)
