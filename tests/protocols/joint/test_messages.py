"""Protocol 4.2's messages: every type round-trips at the current version (2), other
versions are refused, D² totals travel exactly."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cipherseg.protocols.joint.messages as jm
from cipherseg.errors import ProtocolError
from cipherseg.protocols.joint.session import decode_total, encode_total
from cipherseg.protocols.messages import Message

MESSAGE_TYPES = [obj for obj in vars(jm).values()
                 if isinstance(obj, type) and issubclass(obj, Message) and obj is not Message]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(MESSAGE_TYPES), st.data())
def test_every_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    kwargs: dict[str, object] = {"protocol_version": jm.VERSION,
                                 "session_id": data.draw(st.text(max_size=8)),
                                 "round": data.draw(st.integers(0, 10**6))}
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            continue
        if f.type == "bytes":
            kwargs[f.name] = data.draw(st.binary(max_size=32))
        elif f.type == "tuple[bytes, ...]":
            kwargs[f.name] = tuple(data.draw(st.lists(st.binary(min_size=1, max_size=8),
                                                      max_size=3)))
        elif f.type == "tuple[int, ...]":
            kwargs[f.name] = tuple(data.draw(st.lists(st.integers(-(2**60), 2**60), max_size=5)))
        elif f.type == "tuple[float, ...]":
            kwargs[f.name] = tuple(data.draw(st.lists(st.floats(allow_nan=False,
                                                                allow_infinity=False),
                                                      max_size=5)))
        elif f.type == "int":
            kwargs[f.name] = data.draw(st.integers(0, 2**31))
        elif f.type == "float":
            kwargs[f.name] = data.draw(st.floats(0, 1e6))
        elif f.type == "str":
            kwargs[f.name] = data.draw(st.sampled_from(["stats", "d2", "threshold"]))
    message = cls(**kwargs)  # type: ignore[arg-type]
    assert Message.from_bytes(message.to_bytes()) == message


def test_unknown_protocol_versions_are_refused() -> None:
    """Version 2 (committed key shares, digest-checked contributions) refuses version 1 and
    later versions: a party of another version stops at its first message."""
    assert jm.VERSION == 2
    for version in (1, 3):
        m = jm.Close(protocol_version=version, session_id="s", round=0)
        with pytest.raises(ProtocolError, match=f"version {version} is not supported"):
            Message.from_bytes(m.to_bytes())


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=0, max_value=1e300, allow_nan=False))
def test_d2_totals_travel_exactly(total: float) -> None:
    slots = encode_total(total)
    assert all(-(2**41) < s < 2**41 for s in slots)
    assert decode_total(slots) == total
