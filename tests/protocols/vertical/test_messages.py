"""Protocol 4.5's messages: every type round-trips; malformed bytes are refused."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.vertical import messages as vm

TYPES = [getattr(vm, name) for name in dir(vm)
         if isinstance(getattr(vm, name), type) and issubclass(getattr(vm, name), Message)
         and getattr(vm, name) is not Message]

_FIELD = {
    int: st.integers(-(2**31), 2**31), float: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text(max_size=20), bytes: st.binary(max_size=64),
    tuple[int, ...]: st.lists(st.integers(0, 2**31), max_size=5).map(tuple),
    tuple[float, ...]: st.lists(st.floats(allow_nan=False, allow_infinity=False),
                                max_size=5).map(tuple),
    tuple[bytes, ...]: st.lists(st.binary(max_size=40), min_size=1, max_size=5).map(tuple),
}


def _strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _FIELD[hints[f.name]] for f in dataclasses.fields(cls)
              if f.name not in ("protocol_version", "session_id", "round")}
    return st.builds(cls, protocol_version=st.just(vm.VERSION), session_id=st.text(max_size=12),
                     round=st.integers(0, 2**31), **fields)


def test_every_message_type_is_covered() -> None:
    assert len(TYPES) == 21


@pytest.mark.parametrize("cls", TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(_strategy(cls))
    assert Message.from_bytes(message.to_bytes()) == message
    assert vm.stage_of(message) in vm.STAGES


@given(st.binary(max_size=300))
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(ProtocolError):
        Message.from_bytes(blob)


def test_truncated_and_unknown_versions_are_refused() -> None:
    m = vm.new_message(vm.Upload, "s", 1, holder_id=1, n_features=1, block_sizes=(3,),
                       features=(b"ct",))
    data = m.to_bytes()
    for cut in (len(data) - 1, len(data) // 2, 7):
        with pytest.raises(ProtocolError):
            Message.from_bytes(data[:cut])
    with pytest.raises(ProtocolError, match="version 2 is not supported"):
        Message.from_bytes(dataclasses.replace(m, protocol_version=2).to_bytes())
