"""The cubic sigmoid both parties agree on: its documented error."""

from __future__ import annotations

import numpy as np
import pytest

from cipherseg.errors import ParameterError
from cipherseg.protocols.scoring import SigmoidApproximation


def test_sigmoid_approximation_error_documented():
    approx = SigmoidApproximation.fit(4.0)
    x = np.linspace(-4, 4, 1001)
    err = np.max(np.abs(approx(x) - 1 / (1 + np.exp(-x))))
    assert err <= approx.max_error + 1e-9
    assert approx.max_error < 0.04
    assert approx.coverage([0.0, 3.9, 4.1, -10.0]) == 0.5
    with pytest.raises(ParameterError):
        SigmoidApproximation.fit(0.0)
