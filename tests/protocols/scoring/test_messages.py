"""Protocol 4.3's messages: round trips (Hypothesis on the set-up) and version refusal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import ProtocolError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.scoring import (
    EncryptedFeatures,
    EncryptedScores,
    ScoringReady,
    ScoringSetup,
)


@pytest.mark.parametrize("message", [
    ScoringSetup(protocol_version=1, session_id="s", round=0, public_context=b"ctx",
                 n_customers=5, n_features=2, weights=(0.5, -1.25), bias=0.75,
                 sigmoid_coefficients=(0.5, 0.2, 0.0, -0.003)),
    ScoringSetup(protocol_version=1, session_id="s", round=0, public_context=b"ctx",
                 n_customers=5, n_features=2, encrypted_weights=(b"w1", b"w2"),
                 encrypted_bias=b"b"),
    ScoringReady(protocol_version=1, session_id="s", round=0, n_blocks=3),
    EncryptedFeatures(protocol_version=1, session_id="s", round=2, block=1, n_rows=7,
                      columns=(b"a", b"bc")),
    EncryptedScores(protocol_version=1, session_id="s", round=2, block=1, n_rows=7,
                    scores=b"s", probabilities=b""),
])
def test_message_round_trip(message):
    assert Message.from_bytes(message.to_bytes()) == message


@settings(max_examples=30, deadline=None)
@given(weights=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20),
       bias=st.floats(-1e6, 1e6, allow_nan=False), session=st.text(min_size=1, max_size=20))
def test_setup_round_trip_property(weights, bias, session):
    m = ScoringSetup(protocol_version=1, session_id=session, round=0, public_context=b"c",
                     n_customers=1, n_features=len(weights), weights=tuple(weights), bias=bias)
    assert Message.from_bytes(m.to_bytes()) == m


def test_unknown_protocol_version_refused():
    m = ScoringReady(protocol_version=2, session_id="s", round=0, n_blocks=1)
    with pytest.raises(ProtocolError, match="version 2"):
        Message.from_bytes(m.to_bytes())
