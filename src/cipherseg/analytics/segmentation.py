"""RFM features → encrypted k-means → named segments in business units.

The pipeline the CLI (`cipherseg demo`, `cipherseg segment`) and the platform's jobs share.
Features are log1p-transformed and standardised by the owner's :class:`RFMScaler`, quantised
to the fixed-point grid 10^-decimals, and clustered by :class:`EncryptedKMeans`. scikit-learn's
KMeans is run on the same quantised features from the same initial centres as the reference.
Any subset of the feature table's columns can be clustered (``columns``); behavioural
features such as category shares (:mod:`cipherseg.analytics.behaviour`) join RFM there.

Each segment's **typical customer** (``typical``) is ``expm1`` of the segment's mean
``log1p`` value per feature: for the clustered features, the released centroid mapped back
to business units, the same definition a joint segmentation's centroid has.

:func:`choose_k` runs the encrypted pipeline for every k of a range; the owner computes the
inertia and the silhouette of each labelling on its own (quantised, standardised) features
and recommends the smallest k whose silhouette is within 0.01 of the highest.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from cipherseg.analytics.estimators import EncryptedKMeans
from cipherseg.analytics.rfm import RFMScaler, segment_names
from cipherseg.encoding import FixedPointEncoder
from cipherseg.engine.base import Executor
from cipherseg.engine.factory import PartyExecutors
from cipherseg.errors import ValidationError
from cipherseg.progress import Progress
from cipherseg.transport.base import Transport

FEATURES = ("recency", "frequency", "monetary")
#: Customers the silhouette is computed on (a fixed-seed sample above this; it is O(n^2)).
SILHOUETTE_SAMPLE = 4000


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
    #: Per segment, ``expm1`` of the mean ``log1p`` of every column of the feature table.
    typical: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: The clustered features as encrypted: standardised and quantised (owner-side only).
    X: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

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


def segment_customers(features: pd.DataFrame, *, n_clusters: int = 4,
                      random_state: int | None = 0,
                      decimals: int = 2, max_iter: int = 300, tol: float = 1e-4,
                      n_jobs: int | None = None,
                      executor: Executor | PartyExecutors | None = None,
                      progress: Progress | None = None,
                      centre: Transport | None = None,
                      columns: Sequence[str] = FEATURES) -> SegmentationResult:
    """Segment customers on encrypted data from the feature table's ``columns``.

    ``features`` must hold recency, frequency and monetary (segment names come from them)
    and may hold more columns (≥ 0, e.g. category shares); ``columns`` are clustered.
    ``centre`` reaches a compute centre running elsewhere (see :meth:`EncryptedKMeans.fit`).
    """
    missing = [c for c in (*FEATURES, *columns) if c not in features.columns]
    if missing:
        raise ValidationError(f"the features lack column(s) {missing}; found {list(features)}")
    if not columns or len(set(columns)) != len(columns):
        raise ValidationError("choose at least one feature to cluster, each once")
    if len(features) < n_clusters:
        raise ValidationError(
            f"{len(features)} customers cannot form {n_clusters} segments; lower k"
        )
    raw = features.astype(np.float64)
    clustered = raw.loc[:, list(columns)]
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    scaler = RFMScaler(log=True).fit(clustered)
    X = FixedPointEncoder(decimals).quantise(np.asarray(scaler.transform(clustered)))
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
                             columns=list(columns))
    centroids.index = pd.Index(range(n_clusters), name="segment")
    typical = typical_profile(raw, model.labels_, n_clusters)
    shares = [c for c in typical.columns if str(c).startswith("share:")]
    names = segment_names(typical.loc[:, list(FEATURES)],
                          typical.loc[:, shares] if shares else None)
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
                              model, typical=typical, X=X)


def typical_profile(raw: pd.DataFrame, labels: np.ndarray, n_clusters: int) -> pd.DataFrame:
    """Per segment and column, ``expm1`` of the mean ``log1p`` value (NaN for an empty
    segment): the centroid in business units for features clustered in ``log1p`` space.

    >>> raw = pd.DataFrame({"monetary": [1.0, 3.0, 10.0]})
    >>> typical_profile(raw, np.array([0, 0, 1]), 3)["monetary"].round(4).tolist()
    [1.8284, 10.0, nan]
    """
    logged = np.log1p(raw.astype(np.float64).clip(lower=0.0))
    means = logged.groupby(np.asarray(labels)).mean().reindex(range(n_clusters))
    out: pd.DataFrame = np.expm1(means)
    out.index = pd.Index(range(n_clusters), name="segment")
    return out


def inertia_and_silhouette(X: np.ndarray, labels: np.ndarray,
                           sample: int = SILHOUETTE_SAMPLE) -> tuple[float, float | None]:
    """The owner's quality measures of a labelling of its own features ``X``: the sum of
    squared distances to the segment means, and the mean silhouette (on a fixed-seed sample
    of ``sample`` customers when there are more; ``None`` with fewer than two segments)."""
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    inertia = 0.0
    for lab in np.unique(labels):
        part = X[labels == lab]
        inertia += float(((part - part.mean(axis=0)) ** 2).sum())
    n_used = len(np.unique(labels))
    if n_used < 2 or n_used >= len(X):
        return inertia, None
    size = sample if len(X) > sample else None
    return inertia, float(silhouette_score(X, labels, sample_size=size, random_state=0))


@dataclass
class KChoice:
    """Inertia and silhouette for each k tried, the recommendation, and each k's result."""

    ks: list[int]
    inertia: list[float]
    silhouette: list[float | None]
    recommended: int
    results: dict[int, SegmentationResult]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no per-customer data)."""
        return {"ks": self.ks, "inertia": [round(v, 4) for v in self.inertia],
                "silhouette": [None if v is None else round(v, 4) for v in self.silhouette],
                "recommended": self.recommended, "rule": RECOMMENDATION_RULE}


#: Silhouettes within this of the best count as a tie (differences this small change from
#: run to run with k-means++'s random start).
SILHOUETTE_TIE = 0.01
RECOMMENDATION_RULE = ("the smallest k whose mean silhouette (how much closer customers are "
                       "to their own segment than to the next one) is within "
                       f"{SILHOUETTE_TIE} of the highest")


def recommend_k(ks: Sequence[int], silhouette: Sequence[float | None]) -> int:
    """The smallest k whose silhouette is within :data:`SILHOUETTE_TIE` of the best.

    >>> recommend_k([2, 3, 4], [0.41, 0.47, 0.47])
    3
    >>> recommend_k([5, 6, 7, 8], [0.286, 0.331, 0.289, 0.333])
    6
    """
    scored = [(k, s) for k, s in zip(ks, silhouette, strict=True) if s is not None]
    if not scored:
        raise ValidationError("no k gave two or more segments; the customers are too alike "
                              "to segment")
    best = max(s for _, s in scored)
    return min(k for k, s in scored if s >= best - SILHOUETTE_TIE)


def choose_k(features: pd.DataFrame, *, ks: Sequence[int] = range(2, 9),
             progress_for: Callable[[int], Progress | None] | None = None,
             **kwargs: Any) -> KChoice:
    """:func:`segment_customers` for every k in ``ks`` (same protocol, same arguments), the
    owner's inertia and silhouette of each, and the recommended k (:func:`recommend_k`)."""
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 2:
        raise ValidationError("choose among k of at least 2")
    results: dict[int, SegmentationResult] = {}
    inertia: list[float] = []
    silhouette: list[float | None] = []
    for k in ks:
        if len(features) < k:
            break
        prog = progress_for(k) if progress_for is not None else None
        result = segment_customers(features, n_clusters=k, progress=prog, **kwargs)
        i, s = inertia_and_silhouette(result.X, result.model.labels_)
        results[k] = result
        inertia.append(i)
        silhouette.append(s)
    tried = list(results)
    if not tried:
        raise ValidationError(f"{len(features)} customers cannot form {ks[0]} segments")
    return KChoice(tried, inertia, silhouette, recommend_k(tried, silhouette), results)
