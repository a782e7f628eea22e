"""The party contract: request/response over a Link, replies type- and session-checked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message, define_protocol, register_message
from cipherseg.protocols.party import (
    Link,
    NotReady,
    Outgoing,
    Party,
    PartyLink,
    expect_reply,
    respond,
    single_reply,
)

define_protocol("test-party", version=1)


@register_message
@dataclass(frozen=True, slots=True)
class Question(Message):
    PROTOCOL = "test-party"
    n: int = 0
    blob: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Reply(Message):
    PROTOCOL = "test-party"
    n: int = 0
    blob: bytes = b""


@register_message
@dataclass(frozen=True, slots=True)
class Other(Message):
    PROTOCOL = "test-party"


def ask(n: int = 0, session: str = "s1", blob: bytes = b"") -> Question:
    return Question(protocol_version=1, session_id=session, round=1, n=n, blob=blob)


class Echo:
    """Replies to its sender; misbehaves on request (wrong type, session, count, recipient)."""

    name = "centre"

    def __init__(self) -> None:
        self.mode = "ok"
        self.seen: list[tuple[str, Message]] = []

    def handle(self, sender: str, message: Message) -> Outgoing:
        self.seen.append((sender, message))
        assert isinstance(message, Question)
        sid = message.session_id
        good = Reply(protocol_version=1, session_id=sid, round=message.round, n=message.n,
                     blob=message.blob)
        return {
            "ok": [(sender, good)],
            "type": [(sender, Other(protocol_version=1, session_id=sid, round=1))],
            "session": [(sender, Reply(protocol_version=1, session_id="other", round=1))],
            "none": [],
            "two": [(sender, good), (sender, good)],
            "recipient": [("someone-else", good)],
        }[self.mode]


def test_party_protocol_is_structural() -> None:
    assert isinstance(Echo(), Party)


@given(n=st.integers(-(2**62), 2**62), blob=st.binary(max_size=64),
       session=st.text(min_size=1, max_size=20))
def test_request_round_trips_through_bytes_and_counts_them(n: int, blob: bytes,
                                                           session: str) -> None:
    party = Echo()
    link = PartyLink(party, sender="owner-1")
    request = ask(n, session, blob)
    reply = link.request(request, expect=Reply)
    assert (reply.n, reply.blob, reply.session_id) == (n, blob, session)
    sender, seen = party.seen[0]
    assert sender == "owner-1" and seen == request and seen is not request  # crossed as bytes
    size = len(request.to_bytes()) + len(reply.to_bytes())
    assert link.stats.snapshot() == (len(request.to_bytes()), len(reply.to_bytes()))
    assert link.stats.per_type == {"Question": size} and link.stats.messages == 1


@pytest.mark.parametrize(("mode", "match"), [
    ("type", "expected Reply in reply to Question .*got Other"),
    ("session", "is for session 'other', not 's1'"),
    ("none", "got 0 replies"),
    ("two", "got 2 replies"),
    ("recipient", "got 1 replies; expected exactly one to it"),
])
def test_unexpected_replies_raise_protocol_error(mode: str, match: str) -> None:
    party = Echo()
    party.mode = mode
    with pytest.raises(ProtocolError, match=match):
        PartyLink(party, sender="owner").request(ask(), expect=Reply)


def test_expect_accepts_a_tuple_of_types() -> None:
    party = Echo()
    got = PartyLink(party, sender="o").request(ask(3), expect=(Other, Reply))
    assert isinstance(got, Reply) and got.n == 3
    with pytest.raises(ProtocolError, match="expected Other or Question"):
        expect_reply(got, (Other, Question), request=ask())


def test_respond_is_the_server_step_on_bytes() -> None:
    out = respond(Echo(), "owner", ask(7).to_bytes())
    parsed = Message.from_bytes(out)
    assert isinstance(parsed, Reply) and parsed.n == 7
    with pytest.raises(ProtocolError, match=r"malformed|magic"):
        respond(Echo(), "owner", b"not a message")


def test_single_reply_names_the_request() -> None:
    with pytest.raises(ProtocolError, match=r"^Question from 'o' got 0 replies"):
        single_reply([], to="o", request=ask())


def test_errors_of_the_party_propagate_unchanged() -> None:
    class Refuses:
        name = "centre"

        def handle(self, sender: str, message: Message) -> Outgoing:
            raise ProtocolError("refused: out of order")

    with pytest.raises(ProtocolError, match="refused: out of order"):
        PartyLink(Refuses(), sender="o").request(ask(), expect=Reply)


def test_not_ready_is_not_a_protocol_error() -> None:
    # A deferral must never be caught as a refusal by code that handles ProtocolError.
    assert not issubclass(NotReady, ProtocolError)


def test_link_subclass_only_moves_bytes() -> None:
    class Reverse(Link):
        def _exchange(self, data: bytes) -> bytes:
            return data[::-1]

    link = Reverse()
    assert link.request_bytes(b"abc") == b"cba"
    assert link.stats.snapshot() == (3, 3)
    link.close()
