"""Federated averaging (FedAvg, McMahan et al. 2017) of logistic regression across data owners.

Each owner trains locally; only sums of the owners' vectors (numeric moments, then per round
``n_k · w_k`` and ``n_k``) leave them, through an aggregator: :func:`plain_sum` in the clear,
or a secure aggregation that reveals only the sum (the evaluation uses protocol 4.3's
threshold secure sum, :class:`cipherseg.protocols.scoring.secure_sum.ThresholdSecureSum`:
one party per owner, each with its own key share).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from cipherseg.analytics.bank import BankData, numeric_moments, preprocessor_from_moments
from cipherseg.errors import ParameterError

Aggregator = Callable[[Sequence[npt.NDArray[np.float64]]], npt.NDArray[np.float64]]


def plain_sum(vectors: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    """Aggregation in the clear: the aggregator sees every owner's vector."""
    out: npt.NDArray[np.float64] = np.sum(np.stack(vectors), axis=0)
    return out


def partition_owners(data: BankData, n_owners: int, *, seed: int = 0) -> list[BankData]:
    """Split customers at random (IID) among ``n_owners`` simulated data owners.

    Examples
    --------
    >>> import pandas as pd
    >>> d = BankData("bank-full", pd.DataFrame({"age": np.arange(10.0)}), np.zeros(10, int),
    ...              (), ("age",), False)
    >>> [p.n_customers for p in partition_owners(d, 3)]
    [4, 3, 3]
    """
    if not isinstance(n_owners, int) or n_owners < 2:
        raise ParameterError(f"federated training needs at least 2 owners, got {n_owners!r}")
    if data.n_customers < n_owners:
        raise ParameterError(f"{data.n_customers} customers cannot be split among "
                             f"{n_owners} owners")
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(data.n_customers), n_owners)
    return [data.subset(np.sort(p)) for p in parts]


@dataclass(frozen=True, slots=True)
class FedAvgConfig:
    """FedAvg hyper-parameters (McMahan et al., 2017) for L2-regularised logistic regression.

    ``C`` has scikit-learn's meaning (inverse regularisation strength on the summed loss).
    """

    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.1
    C: float = 1.0
    seed: int = 0


def fedavg_logistic(owners: Sequence[BankData], config: FedAvgConfig = FedAvgConfig(), *,
                    aggregate: Aggregator = plain_sum) -> tuple[Pipeline, dict[str, Any]]:
    """Train a logistic regression by FedAvg; only sums of owners' vectors leave the owners.

    Each owner first contributes its numeric moments (count, sum, sum of squares) so that all
    standardise identically; then per round each runs ``local_epochs`` of mini-batch SGD from
    the global weights and contributes ``n_k · w_k`` and ``n_k``; the new global model is
    ``Σ n_k w_k / Σ n_k``. ``aggregate`` sums the contributions (in the clear by default; a
    secure aggregator reveals only the sum). Returns a Pipeline usable like the plaintext one
    (including by :class:`~cipherseg.analytics.scoring.EncryptedScorer`) and a report.

    Examples
    --------
    >>> import pandas as pd
    >>> d = BankData("bank-full", pd.DataFrame({"age": np.arange(40.0)}),
    ...              (np.arange(40) >= 20).astype(int), (), ("age",), False)
    >>> model, report = fedavg_logistic(partition_owners(d, 2), FedAvgConfig(rounds=5))
    >>> model.predict(d.features.iloc[[0, 39]]).tolist(), report["rounds"]
    ([0, 1], 5)
    """
    if len(owners) < 2:
        raise ParameterError("FedAvg needs at least 2 owners")
    if config.rounds < 1 or config.local_epochs < 1 or config.batch_size < 1:
        raise ParameterError("rounds, local_epochs and batch_size must be positive")
    started = time.perf_counter()
    moments = aggregate([numeric_moments(o).ravel() for o in owners])
    pre = preprocessor_from_moments(owners[0], moments.reshape(-1, 3))
    Zs = [np.asarray(pre.transform(o.features), dtype=np.float64) for o in owners]
    ys = [o.target.astype(np.float64) for o in owners]
    n_total = float(sum(len(y) for y in ys))
    d = Zs[0].shape[1]
    lam = 1.0 / (config.C * n_total)
    w = np.zeros(d + 1)
    for r in range(config.rounds):
        contributions = []
        for k, (Z, y) in enumerate(zip(Zs, ys, strict=True)):
            wk = _local_sgd(Z, y, w, lam, config, np.random.default_rng([config.seed, r, k]))
            contributions.append(np.concatenate([len(y) * wk, [len(y)]]))
        total = aggregate(contributions)
        w = total[:-1] / total[-1]
    clf = LogisticRegression(C=config.C)
    clf.coef_ = w[:-1].reshape(1, -1)
    clf.intercept_ = w[-1:].copy()
    clf.classes_ = np.array([0, 1])
    clf.n_features_in_ = d
    clf.n_iter_ = np.array([config.rounds])
    model = Pipeline([("preprocess", pre), ("model", clf)])
    report = {"owners": [o.n_customers for o in owners], "rounds": config.rounds,
              **{k: v for k, v in asdict(config).items() if k != "rounds"},
              "seconds": time.perf_counter() - started}
    return model, report


def _local_sgd(Z: npt.NDArray[np.float64], y: npt.NDArray[np.float64],
               w0: npt.NDArray[np.float64], lam: float, config: FedAvgConfig,
               rng: np.random.Generator) -> npt.NDArray[np.float64]:
    w = w0.copy()
    for _ in range(config.local_epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), config.batch_size):
            b = order[start:start + config.batch_size]
            Zb = Z[b]
            err = 1.0 / (1.0 + np.exp(-(Zb @ w[:-1] + w[-1]))) - y[b]
            w[:-1] -= config.learning_rate * (Zb.T @ err / len(b) + lam * w[:-1])
            w[-1] -= config.learning_rate * float(err.mean())
    return w
