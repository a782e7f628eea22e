"""Encrypted scoring protocol: correctness against numpy, messages, custody, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import (
    CiphertextError,
    EncodingError,
    KeyCustodyError,
    ParameterError,
    ProtocolError,
    ValidationError,
)
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import PartyLink, single_reply
from cipherseg.protocols.scoring import (
    OWNER,
    EncryptedFeatures,
    EncryptedScores,
    ScoringCentre,
    ScoringOwner,
    ScoringReady,
    ScoringSetup,
    SigmoidApproximation,
    sigmoid_params,
)
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext

TOL = 1e-4  # the per-customer tolerance on scores


@pytest.fixture(scope="module")
def keys() -> CkksSecretContext:
    return CkksSecretContext.generate(CkksParams.for_depth(1))


@pytest.fixture(scope="module")
def deep_keys() -> CkksSecretContext:
    return CkksSecretContext.generate(sigmoid_params())


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(1)
    # Two blocks (4096 + 904 customers), standardised-like features with outliers.
    X = rng.normal(size=(5000, 12))
    X[::97, 3] = 40.0  # a heavy outlier, as in Bank Marketing's `previous`
    X[:, 5] = (rng.random(5000) < 0.3).astype(float)  # a one-hot column
    w = rng.normal(scale=0.8, size=12)
    w[7] = 0.0  # an exactly-zero weight must not break SEAL ("transparent" product)
    return X, w, -1.7


def _run(owner: ScoringOwner, X: np.ndarray) -> tuple[np.ndarray, PartyLink]:
    link = PartyLink(ScoringCentre(), sender=OWNER)
    result = owner.run(X, link)
    return result.scores, link


def _reply(centre: ScoringCentre, message: Message) -> Message:
    """The centre's one reply, to the owner (the request/response step of the contract)."""
    return single_reply(centre.handle(OWNER, message), to=OWNER, request=message)


def test_scores_match_numpy_plain_model(keys, problem):
    X, w, b = problem
    scores, transport = _run(ScoringOwner(keys, w, b), X)
    ref = X @ w + b
    assert np.max(np.abs(scores - ref)) < TOL
    assert transport.stats.messages == 1 + 2  # set-up + two blocks


def test_scores_match_numpy_encrypted_model(keys, problem):
    X, w, b = problem
    scores, _ = _run(ScoringOwner(keys, w, b, encrypt_model=True), X[:1000])
    assert np.max(np.abs(scores - (X[:1000] @ w + b))) < TOL


def test_encrypted_model_hides_weights_from_centre(keys, problem):
    _, w, b = problem
    setup = ScoringOwner(keys, w, b, encrypt_model=True).setup_message(10)
    assert setup.weights == () and len(setup.encrypted_weights) == len(w)
    wire = setup.to_bytes()
    for value in (*w[:3], b):
        assert np.float64(value).tobytes() not in wire
        assert repr(float(value)).encode() not in wire


def test_sigmoid_under_encryption(deep_keys, problem):
    X, w, b = problem
    approx = SigmoidApproximation.fit(6.0)
    owner = ScoringOwner(deep_keys, w, b, sigmoid=approx)
    centre = ScoringCentre()
    result = owner.run(X[:2000], PartyLink(centre, sender=OWNER))
    ref = X[:2000] @ w + b
    assert np.max(np.abs(result.scores - ref)) < TOL
    inside = np.abs(ref) <= 6.0
    assert result.probabilities is not None
    # The ciphertext evaluates the cubic exactly enough ...
    assert np.max(np.abs(result.probabilities[inside] - approx(ref[inside]))) < 1e-4
    # ... and the cubic is within its documented error of the true sigmoid on the interval.
    exact = 1.0 / (1.0 + np.exp(-ref[inside]))
    assert np.max(np.abs(result.probabilities[inside] - exact)) <= approx.max_error + 1e-4


def test_sigmoid_approximation_error_documented():
    approx = SigmoidApproximation.fit(4.0)
    x = np.linspace(-4, 4, 1001)
    err = np.max(np.abs(approx(x) - 1 / (1 + np.exp(-x))))
    assert err <= approx.max_error + 1e-9
    assert approx.max_error < 0.04
    assert approx.coverage([0.0, 3.9, 4.1, -10.0]) == 0.5
    with pytest.raises(ParameterError):
        SigmoidApproximation.fit(0.0)


def test_owner_refuses_shallow_context_for_sigmoid(keys):
    with pytest.raises(ParameterError, match="depth"):
        ScoringOwner(keys, [1.0], 0.0, sigmoid=SigmoidApproximation.fit())


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


def _setup_and_block(keys, X, w, b):
    owner = ScoringOwner(keys, w, b, session_id="sess")
    setup = owner.setup_message(X.shape[0])
    cols = tuple(keys.encrypt_to_bytes(X[:, j]) for j in range(X.shape[1]))
    block = EncryptedFeatures(protocol_version=1, session_id="sess", round=1, block=0,
                              n_rows=X.shape[0], columns=cols)
    return setup, block


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
