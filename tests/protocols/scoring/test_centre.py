"""Protocol 4.3's centre: key custody, the sequence it enforces, tampered ciphertexts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cipherseg.errors import (
    CiphertextError,
    KeyCustodyError,
    ProtocolError,
)
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import PartyLink, single_reply
from cipherseg.protocols.scoring import (
    OWNER,
    EncryptedFeatures,
    EncryptedScores,
    ScoringCentre,
    ScoringOwner,
    ScoringSetup,
    SigmoidApproximation,
)
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext

TOL = 1e-4  # the per-customer tolerance on scores


def _reply(centre: ScoringCentre, message: Message) -> Message:
    """The centre's one reply, to the owner (the request/response step of the contract)."""
    return single_reply(centre.handle(OWNER, message), to=OWNER, request=message)


def _setup_and_block(keys, X, w, b):
    owner = ScoringOwner(keys, w, b, session_id="sess")
    setup = owner.setup_message(X.shape[0])
    cols = tuple(keys.encrypt_to_bytes(X[:, j]) for j in range(X.shape[1]))
    block = EncryptedFeatures(protocol_version=1, session_id="sess", round=1, block=0,
                              n_rows=X.shape[0], columns=cols)
    return setup, block


def test_centre_refuses_secret_context(keys):
    from cipherseg.schemes.ckks import pack_context_bytes, unpack_context_bytes

    fields = unpack_context_bytes(keys.public_bytes())
    fields["secret_key"] = b"not really a key but present"
    setup = ScoringSetup(protocol_version=1, session_id="s", round=0,
                         public_context=pack_context_bytes(fields), n_customers=1,
                         n_features=1, weights=(1.0,))
    with pytest.raises(KeyCustodyError):
        _reply(ScoringCentre(), setup)


def test_centre_has_no_secret_key_after_setup(keys):
    centre = ScoringCentre()
    ScoringOwner(keys, [1.0], 0.0).run(np.ones((3, 1)), PartyLink(centre, sender=OWNER))
    assert centre._ctx is not None and centre._ctx.is_private() is False
    assert not hasattr(centre._ctx, "_secret_key")


def test_protocol_errors(keys):
    X = np.ones((4, 2))
    setup, block = _setup_and_block(keys, X, [1.0, 2.0], 0.5)
    centre = ScoringCentre()
    with pytest.raises(ProtocolError, match="before ScoringSetup"):
        _reply(centre, block)
    _reply(centre, setup)
    with pytest.raises(ProtocolError, match="session"):
        _reply(centre, dataclasses.replace(block, session_id="other"))
    with pytest.raises(ProtocolError, match="outside"):
        _reply(centre, dataclasses.replace(block, block=1, round=2))
    with pytest.raises(ProtocolError, match="should hold 4"):
        _reply(centre, dataclasses.replace(block, n_rows=3))
    with pytest.raises(ProtocolError, match="feature ciphertexts"):
        _reply(centre, dataclasses.replace(block, columns=block.columns[:1]))
    reply = _reply(centre, block)
    assert isinstance(reply, EncryptedScores)
    assert np.allclose(keys.decrypt_bytes(reply.scores, 4), 3.5, atol=TOL)
    with pytest.raises(ProtocolError, match="already scored"):
        _reply(centre, block)
    with pytest.raises(ProtocolError, match="does not accept"):
        _reply(centre, reply)


def test_setup_errors(keys):
    setup, _ = _setup_and_block(keys, np.ones((4, 2)), [1.0, 2.0], 0.5)
    centre = ScoringCentre()
    with pytest.raises(ProtocolError, match="2 weights for 3"):
        _reply(centre, dataclasses.replace(setup, n_features=3))
    with pytest.raises(ProtocolError, match="exactly one"):
        _reply(centre, dataclasses.replace(setup, encrypted_weights=(b"x", b"y")))
    with pytest.raises(ProtocolError, match="finite"):
        _reply(centre, dataclasses.replace(setup, weights=(1.0, float("nan"))))
    with pytest.raises(ProtocolError, match="depth"):
        _reply(centre, dataclasses.replace(
            setup, sigmoid_coefficients=SigmoidApproximation.fit().coefficients))
    with pytest.raises(ProtocolError, match="round 0"):
        _reply(centre, dataclasses.replace(setup, round=1))
    with pytest.raises(ProtocolError, match="version"):
        _reply(centre, dataclasses.replace(setup, protocol_version=9))


def test_tampered_and_foreign_ciphertexts_refused(keys):
    X = np.ones((4, 2))
    setup, block = _setup_and_block(keys, X, [1.0, 2.0], 0.5)
    centre = ScoringCentre()
    _reply(centre, setup)
    bad = bytearray(block.columns[0])
    bad[-10] ^= 0xFF
    with pytest.raises(CiphertextError):
        _reply(centre, dataclasses.replace(block, columns=(bytes(bad),
                                                                  block.columns[1])))
    with pytest.raises(CiphertextError):
        _reply(centre, dataclasses.replace(
            block, columns=(block.columns[0][:100], block.columns[1])))
    other = CkksSecretContext.generate(CkksParams.for_depth(1))
    foreign = other.encrypt_to_bytes(np.ones(4))
    with pytest.raises(CiphertextError, match="another key set"):
        _reply(centre, dataclasses.replace(block, columns=(foreign,
                                                                  block.columns[1])))
