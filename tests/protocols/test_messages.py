"""Protocol messages: byte round trips for every message type, refusal of bad bytes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import (
    PROTOCOLS,
    SUPPORTED_VERSIONS,
    Message,
    define_protocol,
    register_message,
)
from cipherseg.protocols.outsourced import messages as p

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

    define_protocol("test-other", version=1)

    @register_message
    @dataclass(frozen=True, slots=True)
    class Close(Message):  # same name as outsourced Close, another protocol
        PROTOCOL = "test-other"

    theirs = Close(protocol_version=1, session_id="a", round=1)
    ours = p.Close(protocol_version=1, session_id="a", round=1)
    assert type(Message.from_bytes(theirs.to_bytes())) is Close
    assert type(Message.from_bytes(ours.to_bytes())) is p.Close


def test_versions_come_from_each_protocols_descriptor() -> None:
    import cipherseg.protocols.scoring.messages
    import cipherseg.protocols.seed.messages as seed
    import cipherseg.protocols.vertical.messages as vm

    for module in (p, vm):
        assert SUPPORTED_VERSIONS[module.PROTOCOL] == frozenset({module.VERSION})
        assert PROTOCOLS[module.PROTOCOL].version == module.VERSION
    assert vm.VERSION == 2  # the registry used to say {1} for every protocol
    assert seed.SPEC.version == seed.VERSION
    assert cipherseg.protocols.scoring.messages.SPEC.accepts == frozenset({1})


def test_a_bumped_protocol_round_trips_and_refuses_what_it_no_longer_reads() -> None:
    from dataclasses import dataclass

    define_protocol("test-bumped", version=3, accepts=(2, 3))

    @register_message
    @dataclass(frozen=True, slots=True)
    class Hello(Message):
        PROTOCOL = "test-bumped"
        blob: bytes = b""

    for version in (2, 3):
        msg = Hello(protocol_version=version, session_id="s", round=1, blob=b"x")
        assert Message.from_bytes(msg.to_bytes()) == msg
    with pytest.raises(ProtocolError, match=r"version 1 is not supported \(supported: \[2, 3\]\)"):
        Message.from_bytes(Hello(protocol_version=1, session_id="s", round=1).to_bytes())


def test_messages_of_an_undeclared_protocol_cannot_register() -> None:
    from dataclasses import dataclass

    with pytest.raises(TypeError, match="define_protocol"):
        @register_message
        @dataclass(frozen=True, slots=True)
        class Stray(Message):
            PROTOCOL = "test-undeclared"


def test_redeclaring_a_protocol_differently_is_refused() -> None:
    with pytest.raises(TypeError, match="already defined with version 1"):
        define_protocol(p.PROTOCOL, version=2)
    assert define_protocol(p.PROTOCOL, version=1) == p.SPEC  # the same declaration is fine


# Written by the code before protocol descriptors (commit 3fbb68c): the wire format is unchanged.
GOLDEN = {
    "Pick": "43534d53470100870000007b2274797065223a225069636b222c2270726f746f636f6c223a226b"
            "6d65616e732d6f7574736f7572636564222c2270726f746f636f6c5f76657273696f6e223a312c"
            "2273657373696f6e5f6964223a227331222c22726f756e64223a322c2273687566666c65645f62"
            "6c6f636b223a332c22736c6f74223a342c225f626c6f6273223a7b7d7d00000000",
    "NewCentre": "43534d534701007e0000007b2274797065223a224e657743656e747265222c2270726f74"
                 "6f636f6c223a226b6d65616e732d6f7574736f7572636564222c2270726f746f636f6c5f76"
                 "657273696f6e223a312c2273657373696f6e5f6964223a227331222c22726f756e64223a32"
                 "2c225f626c6f6273223a7b2263656e747265223a5b302c325d7d7d020000000200000000000"
                 "0006162010000000000000063",
}


def test_the_wire_bytes_of_a_message_are_unchanged() -> None:
    pick = p.Pick(protocol_version=1, session_id="s1", round=2, shuffled_block=3, slot=4)
    new = p.NewCentre(protocol_version=1, session_id="s1", round=2, centre=(b"ab", b"c"))
    for msg in (pick, new):
        golden = bytes.fromhex(GOLDEN[type(msg).__name__])
        assert msg.to_bytes() == golden
        assert Message.from_bytes(golden) == msg
