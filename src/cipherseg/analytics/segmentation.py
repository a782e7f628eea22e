"""RFM features → encrypted k-means → named segments in business units.

The pipeline the CLI (`cipherseg demo`, `cipherseg segment`) and the platform's jobs share.
Features are log1p-transformed and standardised by the owner's :class:`RFMScaler`, quantised
to the fixed-point grid 10^-decimals, and clustered by :class:`EncryptedKMeans`. scikit-learn's
KMeans is run on the same quantised features from the same initial centres as the reference.

>>> import pandas as pd
>>> feats = pd.DataFrame({"recency": [1, 2, 300, 310], "frequency": [9, 8, 1, 1],
...                       "monetary": [90.0, 80.0, 10.0, 12.0]},
...                      index=pd.Index(["a", "b", "c", "d"], name="customer_id"))
>>> result = segment_customers(feats, n_clusters=2, random_state=0)
>>> sorted(result.segments["size"].tolist())
[2, 2]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from cipherseg.analytics.estimators import EncryptedKMeans
from cipherseg.analytics.rfm import RFMScaler, segment_names
from cipherseg.encoding import FixedPointEncoder
from cipherseg.engine.base import Executor
from cipherseg.engine.factory import PartyExecutors
from cipherseg.errors import ValidationError
from cipherseg.progress import Progress
from cipherseg.transport.base import Transport

FEATURES = ("recency", "frequency", "monetary")


@dataclass
class SegmentationResult:
    """Labels per customer, a segment table in business units, and how it was obtained."""

    labels: pd.Series
    segments: pd.DataFrame
    centroids_business: pd.DataFrame
    ari_vs_sklearn: float
    max_centroid_error: float
    seconds: dict[str, float]
    report: dict[str, Any]
    scaler: RFMScaler
    model: EncryptedKMeans
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-customer data)."""
        return {
            "segments": self.segments.reset_index().to_dict(orient="records"),
            "centroids_business_units": self.centroids_business.reset_index().to_dict(
                orient="records"),
            "ari_vs_sklearn": self.ari_vs_sklearn,
            "max_centroid_error_standardised": self.max_centroid_error,
            "n_iter": int(self.model.n_iter_),
            "seconds": self.seconds,
            "report": self.report,
            "scaler": self.scaler.to_dict(),
            **self.extra,
        }


def segment_customers(features: pd.DataFrame, *, n_clusters: int = 4, random_state: int = 0,
                      decimals: int = 2, max_iter: int = 300, tol: float = 1e-4,
                      n_jobs: int | None = None,
                      executor: Executor | PartyExecutors | None = None,
                      progress: Progress | None = None,
                      centre: Transport | None = None) -> SegmentationResult:
    """Segment customers from their RFM features on encrypted data.

    ``centre`` reaches a compute centre running elsewhere (see :meth:`EncryptedKMeans.fit`).
    """
    missing = [c for c in FEATURES if c not in features.columns]
    if missing:
        raise ValidationError(f"RFM features lack column(s) {missing}; found {list(features)}")
    if len(features) < n_clusters:
        raise ValidationError(
            f"{len(features)} customers cannot form {n_clusters} segments; lower k"
        )
    raw = features.loc[:, list(FEATURES)].astype(np.float64)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    scaler = RFMScaler(log=True).fit(raw)
    X = FixedPointEncoder(decimals).quantise(np.asarray(scaler.transform(raw)))
    seconds["scale_and_encode"] = time.perf_counter() - t

    t = time.perf_counter()
    model = EncryptedKMeans(n_clusters=n_clusters, random_state=random_state, max_iter=max_iter,
                            tol=tol, n_jobs=n_jobs, decimals=decimals)
    model.fit(X, progress=progress, executor=executor, centre=centre)
    seconds["encrypted_kmeans"] = time.perf_counter() - t

    t = time.perf_counter()
    ref = KMeans(n_clusters=n_clusters, init=model.init_centers_, n_init=1, max_iter=max_iter,
                 tol=tol).fit(X)
    seconds["sklearn_kmeans"] = time.perf_counter() - t
    ari = float(adjusted_rand_score(ref.labels_, model.labels_))
    err = float(np.abs(ref.cluster_centers_ - model.cluster_centers_).max())

    labels = pd.Series(model.labels_, index=raw.index, name="segment")
    centroids = pd.DataFrame(scaler.inverse_transform(model.cluster_centers_),
                             columns=list(FEATURES))
    names = segment_names(centroids)
    centroids.index = pd.Index(range(n_clusters), name="segment")
    profile = raw.groupby(labels.to_numpy()).mean()
    segments = pd.DataFrame({
        "name": names,
        "size": np.bincount(model.labels_, minlength=n_clusters),
        "mean_recency_days": profile["recency"].reindex(range(n_clusters)).to_numpy(),
        "mean_frequency": profile["frequency"].reindex(range(n_clusters)).to_numpy(),
        "mean_monetary": profile["monetary"].reindex(range(n_clusters)).to_numpy(),
    }, index=pd.Index(range(n_clusters), name="segment"))
    report = dict(model.report_)
    return SegmentationResult(labels, segments, centroids, ari, err, seconds, report, scaler,
                              model)
