"""Protocol messages: byte round trips for every message type, refusal of bad bytes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ProtocolError
from cipherseg.protocols import kmeans_outsourced as p
from cipherseg.protocols.messages import Message

MESSAGE_TYPES = [
    obj for obj in vars(p).values()
    if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message
]

blobs = st.lists(st.binary(min_size=0, max_size=64), max_size=4).map(tuple)


def _example(cls: type[Message], draw: st.DrawFn) -> Message:
    kwargs: dict[str, object] = {"protocol_version": 1, "session_id": draw(st.text(max_size=8)),
                                 "round": draw(st.integers(0, 10**6))}
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            continue
        if f.type in ("bytes",):
            kwargs[f.name] = draw(st.binary(max_size=64))
        elif f.type.startswith("tuple[bytes"):
            kwargs[f.name] = draw(blobs.filter(lambda t: all(t) or not t))
        elif f.type.startswith("tuple[int"):
            kwargs[f.name] = tuple(draw(st.lists(st.integers(0, 4096), max_size=5)))
        elif f.type == "int":
            kwargs[f.name] = draw(st.integers(0, 2**31))
    return cls(**kwargs)


def test_every_protocol_message_is_covered() -> None:
    assert len(MESSAGE_TYPES) >= 15


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    msg = _example(cls, data.draw)
    assert Message.from_bytes(msg.to_bytes()) == msg


def test_unknown_protocol_version_is_refused() -> None:
    msg = p.Close(protocol_version=99, session_id="s", round=1)
    with pytest.raises(ProtocolError, match="version 99 is not supported"):
        Message.from_bytes(msg.to_bytes())


def test_truncated_and_foreign_bytes_are_refused() -> None:
    data = p.NewCentre(protocol_version=1, session_id="s", round=1,
                       centre=(b"x" * 100,)).to_bytes()
    for cut in (3, 20, len(data) - 10):
        with pytest.raises(ProtocolError):
            Message.from_bytes(data[:cut])
    with pytest.raises(ProtocolError, match="trailing bytes"):
        Message.from_bytes(data + b"!")
    with pytest.raises(ProtocolError, match="bad magic"):
        Message.from_bytes(b"GET / HTTP/1.1")


def test_same_named_messages_of_two_protocols_do_not_collide() -> None:
    from dataclasses import dataclass

    from cipherseg.protocols.messages import register_message

    @register_message
    @dataclass(frozen=True, slots=True)
    class Close(Message):  # same name as kmeans_outsourced.Close, another protocol
        PROTOCOL = "test-other"

    theirs = Close(protocol_version=1, session_id="a", round=1)
    ours = p.Close(protocol_version=1, session_id="a", round=1)
    assert type(Message.from_bytes(theirs.to_bytes())) is Close
    assert type(Message.from_bytes(ours.to_bytes())) is p.Close
