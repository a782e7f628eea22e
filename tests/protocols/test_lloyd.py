"""One Lloyd update with empty clusters, against scikit-learn's (`update_centres`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans

from cipherseg.protocols.lloyd import update_centres


def _one_step(X: np.ndarray, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ours, scikit-learn's) centres after one Lloyd iteration from ``init``."""
    labels = np.argmin(((X[:, None] - init[None]) ** 2).sum(-1), axis=1)
    k = len(init)
    sums = np.array([X[labels == j].sum(axis=0) for j in range(k)])
    ours = update_centres(X, labels, init, sums, np.bincount(labels, minlength=k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on duplicate points
        ref = KMeans(k, init=init, n_init=1, max_iter=1, algorithm="lloyd").fit(X)
    return ours, ref.cluster_centers_


@pytest.mark.parametrize("case", ["one empty", "two empty", "still empty", "duplicates"])
def test_empty_clusters_as_scikit_learn(case: str) -> None:
    rng = np.random.default_rng(5)
    if case == "one empty":
        X = rng.normal(0, 1, (300, 2))
        init = np.vstack([X[:2], [[50.0, 50.0]]])
    elif case == "two empty":
        X = rng.normal(0, 1, (300, 2))
        init = np.vstack([X[:2], [[50.0, 50.0], [-60.0, 10.0]]])
    elif case == "still empty":  # cluster 1's only record is the farthest: it moves to 2
        X = np.array([[0.0, 0.0], [0.1, 0.05], [0.2, 0.0], [5.0, 0.0]])
        init = np.array([[0.1, 0.0], [4.0, 0.0], [100.0, 0.0]])
    else:  # more clusters than distinct records: nothing to relocate
        X = np.repeat(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [5, 3, 2], axis=0)
        init = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0], [-9.0, 9.0]])
    ours, ref = _one_step(X, init)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert np.abs(ours).max() < np.abs(X).max() + 1e-12  # no centre left far away
