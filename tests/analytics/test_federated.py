"""FedAvg: the secure aggregation gives the plain result, close to central training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bank_data import needs_data, small_split
from cipherseg.analytics.bank import make_logistic_pipeline
from cipherseg.analytics.federated import FedAvgConfig, fedavg_logistic, partition_owners
from cipherseg.errors import ParameterError
from cipherseg.protocols.scoring.secure_sum import ThresholdSecureSum


@needs_data
def test_fedavg_secure_equals_plain_and_approaches_central():
    train, test = small_split()
    owners = partition_owners(train, 3, seed=0)
    assert sum(o.n_customers for o in owners) == train.n_customers
    config = FedAvgConfig(rounds=20)
    plain, report = fedavg_logistic(owners, config)
    secure, _ = fedavg_logistic(owners, config, aggregate=ThresholdSecureSum(3))
    s_plain = plain.decision_function(test.features)
    assert np.max(np.abs(secure.decision_function(test.features) - s_plain)) < 1e-6
    assert report["owners"] == [o.n_customers for o in owners]
    central = make_logistic_pipeline(train).fit(train.features, train.target)
    auc_central = roc_auc_score(test.target, central.decision_function(test.features))
    assert roc_auc_score(test.target, s_plain) > auc_central - 0.02
    with pytest.raises(ParameterError):
        fedavg_logistic(owners[:1])
    with pytest.raises(ParameterError):
        partition_owners(train, 1)
