"""The scikit-learn estimator of protocol 4.2 (:mod:`cipherseg.protocols.joint`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint.owner import assign
from cipherseg.protocols.joint.runner import run_joint_kmeans
from cipherseg.schemes.threshold import ThresholdParams


class JointKMeans(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """K-means over several data owners' pooled customers without pooling them (protocol 4.2).

    Every party runs in this process (messages still cross as bytes); for separate processes
    see :func:`~cipherseg.hosting.joint_processes.run_joint_kmeans_processes`, for the CLI
    ``cipherseg joint-demo``. Without DP the result equals scikit-learn's
    :class:`~sklearn.cluster.KMeans` on the pooled data,
    quantised to the fixed-point grid, started from the same centres (``init_centers_``).

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"} or ndarray of shape (n_clusters, n_features)
        "k-means++": joint k-means++ (owner sampled by its D² total, then a record inside it).
        "random": data-independent centres in ``dp_bounds`` (DP mode). An array: public
        centres.
    max_iter : int, default=100
        With DP, the number of iterations the budget is split across (all are run).
    tol : float, default=0.0
        Stop when the squared centre shift is at most ``tol`` (0: until nothing moves).
    decimals : int, default=2
        Fixed-point precision 10^-decimals of the features.
    dp_epsilon : float or None, default=None
        If set, every owner adds Gaussian noise to its per-iteration sums and counts so the
        whole run is (dp_epsilon, dp_delta)-DP per customer (:mod:`cipherseg.protocols.dp`).
    dp_delta : float, default=1e-6
    dp_bounds : (lower, upper) or None
        Public per-feature bounds (required with DP); records are clipped into them.
    mode : {"threshold", "plain"}, default="threshold"
        The aggregation scheme (:mod:`cipherseg.schemes.base`): "plain" aggregates in the
        clear (the federated baseline for benchmarks only).
    params : ThresholdParams or None
        Threshold scheme parameters (default 128-bit set).
    random_state : int or None
        Seeds the parties' sampling choices (k-means++ picks, data-independent centres) for
        reproducible runs; ``None``: OS CSPRNG. Keys, encryption, smudging and DP noise always
        come from the OS CSPRNG, whatever the seed.

    Attributes
    ----------
    cluster_centers_, init_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), owners' labels in input order
    n_iter_ : int
    n_features_in_ : int
    result_ : JointResult (traffic, timings, the manager's log)
    dp_epsilon_spent_ : float or None

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> owners = [rng.normal([0, 0], .2, (40, 2)), rng.normal([4, 4], .2, (40, 2))]
    >>> model = JointKMeans(n_clusters=2, random_state=0).fit(owners)
    >>> sorted(np.bincount(model.labels_).tolist()), model.predict([[4.1, 3.9]]).shape
    ([40, 40], (1,))
    """

    def __init__(self, n_clusters: int = 8, *, init: str | npt.ArrayLike = "k-means++",
                 max_iter: int = 100, tol: float = 0.0, decimals: int = 2,
                 dp_epsilon: float | None = None, dp_delta: float = 1e-6,
                 dp_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 mode: str = "threshold", params: ThresholdParams | None = None,
                 random_state: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.decimals = decimals
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_bounds = dp_bounds
        self.mode = mode
        self.params = params
        self.random_state = random_state

    def fit(self, X: Sequence[npt.ArrayLike] | npt.ArrayLike, y: Any = None, *,
            owners: npt.ArrayLike | None = None) -> JointKMeans:
        """Fit on a list of per-owner arrays, or on one array with ``owners`` (owner index
        of each row)."""
        parts, order = _split_owners(X, owners)
        if not isinstance(self.n_clusters, int) or self.n_clusters < 1:
            raise ParameterError(f"n_clusters must be a positive integer, got {self.n_clusters!r}")
        total = sum(p.shape[0] for p in parts)
        if total < self.n_clusters:
            raise ValidationError(f"{total} samples cannot form {self.n_clusters} clusters")
        dp = None
        if self.dp_epsilon is not None:
            if self.dp_bounds is None:
                raise ParameterError("dp_epsilon needs public dp_bounds=(lower, upper)")
            lower, upper = self.dp_bounds
            dp = DPConfig(float(self.dp_epsilon), float(self.dp_delta), int(self.max_iter),
                          tuple(lower), tuple(upper))
        init = self.init
        if dp is not None and isinstance(init, str) and init == "k-means++":
            init = "random"
        result = run_joint_kmeans(parts, self.n_clusters, params=self.params, mode=self.mode,
                                  init=init, max_iter=self.max_iter, tol=self.tol,
                                  decimals=self.decimals, dp=dp, random_state=self.random_state)
        labels = np.concatenate(result.labels)
        self.labels_ = np.empty_like(labels)
        self.labels_[order] = labels
        self.cluster_centers_ = result.centroids
        self.init_centers_ = result.init_centres
        self.n_iter_ = result.n_iter
        self.n_features_in_ = parts[0].shape[1]
        self.result_ = result
        self.dp_epsilon_spent_ = result.dp_epsilon_spent
        return self

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Nearest released centroid for each row of X."""
        check_is_fitted(self, "cluster_centers_")
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise ValidationError(f"X must have shape (n, {self.n_features_in_})")
        return assign(arr, self.cluster_centers_)


def _split_owners(X: Sequence[npt.ArrayLike] | npt.ArrayLike, owners: npt.ArrayLike | None
                  ) -> tuple[list[npt.NDArray[np.float64]], npt.NDArray[np.int64]]:
    if owners is None:
        if not isinstance(X, (list, tuple)):
            raise ValidationError("pass a list of per-owner arrays, or an array and `owners`")
        parts = [np.asarray(p, dtype=np.float64) for p in X]
        order = np.arange(sum(p.shape[0] for p in parts))
    else:
        arr = np.asarray(X, dtype=np.float64)
        who = np.asarray(owners)
        if who.shape != (arr.shape[0],):
            raise ValidationError("`owners` needs one owner index per row of X")
        groups = [np.flatnonzero(who == g) for g in np.unique(who)]
        parts = [arr[g] for g in groups]
        order = np.concatenate(groups)
    if not parts or any(p.ndim != 2 for p in parts) or len({p.shape[1] for p in parts}) != 1:
        raise ValidationError("every owner's data must be 2-D with the same number of features")
    return parts, order
