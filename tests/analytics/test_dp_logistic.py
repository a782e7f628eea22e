"""diffprivlib's ε-DP logistic regression behind the owner's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

from bank_data import needs_data, small_split
from cipherseg.analytics.dp_logistic import make_dp_pipeline
from cipherseg.errors import ParameterError


@needs_data
def test_dp_pipeline_spends_its_budget():
    from diffprivlib.accountant import BudgetAccountant

    train, test = small_split()
    model = make_dp_pipeline(train, 0.5, seed=0)
    accountant = model[-1].accountant
    assert isinstance(accountant, BudgetAccountant)
    model.fit(train.features, train.target)
    assert accountant.total() == (0.5, 0)
    other = make_dp_pipeline(train, 0.5, seed=1).fit(train.features, train.target)
    assert not np.allclose(model[-1].coef_, other[-1].coef_)  # noise differs by seed
    assert model.decision_function(test.features).shape == (test.n_customers,)
    with pytest.raises(ParameterError):
        make_dp_pipeline(train, 0.0)
