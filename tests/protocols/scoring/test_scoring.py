"""Encrypted scoring end to end: scores against numpy, the hidden model, the sigmoid."""

from __future__ import annotations

import numpy as np

from cipherseg.protocols.party import PartyLink
from cipherseg.protocols.scoring import (
    OWNER,
    ScoringCentre,
    ScoringOwner,
    SigmoidApproximation,
)

TOL = 1e-4  # the per-customer tolerance on scores


def _run(owner: ScoringOwner, X: np.ndarray) -> tuple[np.ndarray, PartyLink]:
    link = PartyLink(ScoringCentre(), sender=OWNER)
    result = owner.run(X, link)
    return result.scores, link


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
