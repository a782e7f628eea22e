"""Shared fixtures of protocol 4.3's tests: key sets and a two-block scoring problem."""

from __future__ import annotations

import numpy as np
import pytest

from cipherseg.protocols.scoring import sigmoid_params
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext


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
