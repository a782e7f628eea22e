"""Classification metrics against scikit-learn's, and refusals of malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from cipherseg.analytics.metrics import METRICS, classification_metrics, roc_points
from cipherseg.errors import ValidationError


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = y + rng.normal(scale=1.2, size=400) - 0.5
    m = classification_metrics(y, s)
    pred = (s >= 0).astype(int)
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])  # weighted recall = accuracy
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert set(m) == set(METRICS)
    assert classification_metrics(y, s, threshold=1e9)["precision"] == 0.0


def test_metrics_bad_input():
    with pytest.raises(ValidationError, match="correspond"):
        classification_metrics([0, 1], [0.0])
    with pytest.raises(ValidationError, match="both classes"):
        classification_metrics([1, 1], [0.0, 1.0])
    with pytest.raises(ValidationError, match="finite"):
        classification_metrics([0, 1], [0.0, np.inf])


def test_roc_points_are_thinned_but_keep_the_ends():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 5000)
    s = y + rng.normal(size=5000)
    pts = roc_points(y, s, max_points=50)
    assert len(pts["fpr"]) == len(pts["tpr"]) <= 50
    assert (pts["fpr"][0], pts["tpr"][0]) == (0.0, 0.0)
    assert (pts["fpr"][-1], pts["tpr"][-1]) == (1.0, 1.0)
    assert pts["fpr"] == sorted(pts["fpr"]) and pts["tpr"] == sorted(pts["tpr"])
