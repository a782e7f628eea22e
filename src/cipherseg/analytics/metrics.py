"""Classification metrics of a scored customer list, as the evaluation and the CLI report them.

Positive-class and support-weighted precision, recall and F1, accuracy and ROC AUC of scores
that rank customers (higher = more likely to respond), and a thinned ROC curve for plots.

>>> import numpy as np
>>> m = classification_metrics(np.array([0, 0, 1, 1]), np.array([-2.0, 0.5, 1.0, -0.1]))
>>> m["precision"], m["recall"], m["accuracy"], m["roc_auc"]
(0.5, 0.5, 0.5, 0.75)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from cipherseg.errors import ValidationError

METRICS: tuple[str, ...] = ("precision", "recall", "f1", "precision_weighted",
                            "recall_weighted", "f1_weighted", "accuracy", "roc_auc")


def classification_metrics(y_true: npt.ArrayLike, scores: npt.ArrayLike,
                           threshold: float = 0.0) -> dict[str, float]:
    """Positive-class and support-weighted precision/recall/F1, accuracy and ROC AUC.

    ``scores`` rank customers (higher = more likely to subscribe); ``score >= threshold``
    predicts "subscribed". Precision of an empty prediction is reported as 0.

    Examples
    --------
    >>> classification_metrics([0, 1], [0.0])
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: 2 labels but 1 scores; they must correspond one to one
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValidationError(f"{y.size} labels but {s.size} scores; they must correspond one "
                              "to one")
    if not np.all(np.isfinite(s)):
        raise ValidationError("scores must be finite numbers")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValidationError("labels must contain both classes, coded 0 and 1")
    pred = (s >= threshold).astype(int)
    out = {
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
        "f1": f1_score(y, pred, zero_division=0),
        "precision_weighted": precision_score(y, pred, average="weighted", zero_division=0),
        "recall_weighted": recall_score(y, pred, average="weighted", zero_division=0),
        "f1_weighted": f1_score(y, pred, average="weighted", zero_division=0),
        "accuracy": accuracy_score(y, pred),
        "roc_auc": roc_auc_score(y, s),
    }
    return {k: float(v) for k, v in out.items()}


def roc_points(y: npt.ArrayLike, s: npt.ArrayLike, max_points: int = 200
                ) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(y, s)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr]}
