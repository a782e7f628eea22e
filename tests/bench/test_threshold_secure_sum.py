"""Threshold secure aggregation for FedAvg: exact sums, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from cipherseg.bench.threshold_secure_sum import ThresholdSecureSum
from cipherseg.errors import EncodingError, ParameterError, ValidationError


def test_secure_sum_exact_and_checked():
    agg = ThresholdSecureSum(3, decimals=6, seed=b"0123456789abcdef0123")
    vectors = [np.array([1.25, -3.5, 2.0e12]), np.array([0.000001, 7.0, -1.0e12]),
               np.array([-1.25, 0.0, 5.5])]
    assert np.allclose(agg(vectors), np.sum(vectors, axis=0), rtol=0, atol=1e-6)
    assert agg.report()["secure_sums"] == 1 and agg.bytes_to_centre > 0
    with pytest.raises(ValidationError, match="one vector per owner"):
        agg(vectors[:2])
    with pytest.raises(EncodingError):
        agg([np.array([np.nan, 0, 0])] * 3)
    with pytest.raises(EncodingError, match="range"):
        agg([np.array([1e20, 0, 0])] * 3)
    with pytest.raises(ParameterError, match="parties"):
        ThresholdSecureSum(7)
    with pytest.raises(ParameterError):
        ThresholdSecureSum(1)
