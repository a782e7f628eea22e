"""Protocol 4.3's owner: input validation and what it refuses from a lying centre."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cipherseg.errors import (
    EncodingError,
    ParameterError,
    ProtocolError,
    ValidationError,
)
from cipherseg.protocols.party import PartyLink
from cipherseg.protocols.scoring import (
    OWNER,
    EncryptedScores,
    ScoringCentre,
    ScoringOwner,
    ScoringReady,
    SigmoidApproximation,
)


def test_owner_refuses_shallow_context_for_sigmoid(keys):
    with pytest.raises(ParameterError, match="depth"):
        ScoringOwner(keys, [1.0], 0.0, sigmoid=SigmoidApproximation.fit())


class _LyingCentre:
    """A centre that answers a block with the wrong message or the wrong block."""

    name = "centre"

    def __init__(self, lie: str) -> None:
        self.honest, self.lie = ScoringCentre(), lie

    def handle(self, sender, message):
        [(to, reply)] = self.honest.handle(sender, message)
        if isinstance(reply, EncryptedScores):
            if self.lie == "type":
                reply = ScoringReady(protocol_version=1, session_id=reply.session_id,
                                     round=reply.round, n_blocks=1)
            elif self.lie == "block":
                reply = dataclasses.replace(reply, block=reply.block + 1)
            else:
                reply = dataclasses.replace(reply, session_id="another")
        return [(to, reply)]


@pytest.mark.parametrize(("lie", "error"), [("type", "expected EncryptedScores"),
                                            ("block", "is for block 1"),
                                            ("session", "session 'another'")])
def test_owner_refuses_unexpected_replies(keys, lie, error):
    owner = ScoringOwner(keys, [1.0, 2.0], 0.5)
    with pytest.raises(ProtocolError, match=error):
        owner.run(np.ones((4, 2)), PartyLink(_LyingCentre(lie), sender=OWNER))


def test_owner_input_validation(keys):
    owner = ScoringOwner(keys, [1.0, 2.0], 0.0)
    with pytest.raises(ValidationError, match="2 columns"):
        owner.encode(np.ones((3, 3)))
    with pytest.raises(ValidationError):
        owner.encode(np.ones(3))
    with pytest.raises(EncodingError):
        owner.encode(np.array([[1.0, np.nan]]))
    with pytest.raises(EncodingError):
        owner.encode(np.array([[1.0, np.inf]]))
    with pytest.raises(ValidationError, match="finite"):
        ScoringOwner(keys, [1.0, np.inf], 0.0)
    with pytest.raises(ValidationError):
        ScoringOwner(keys, [], 0.0)
