"""``VerticalKMeans``: protocol 4.5 in the scikit-learn mould."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from cipherseg.errors import ValidationError
from cipherseg.protocols.vertical.runner import run_vertical


class VerticalKMeans(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """K-means over several holders' *columns* of their shared customers (protocol 4.5).

    Every party — each holder, the compute centre, the key-holding manager — runs in this
    process and their messages cross as bytes; the parties themselves are sans-IO
    (:mod:`cipherseg.protocols.vertical`), so a networked deployment adapts them. Holders are
    aligned by private set intersection on ``ids``. Without DP the result equals
    scikit-learn's :class:`~sklearn.cluster.KMeans` on the joined plaintext started from the
    same centres (ties to the lower cluster index; empty clusters keep their centre).

    Parameters
    ----------
    n_clusters : int, default=8
        k, between 2 and 255.
    init : "k-means++", "random" or ndarray of shape (n_clusters, n_features)
        "k-means++": secure selection (the manager never sees the picked records). "random":
        data-independent centres in ``dp_bounds`` (DP mode). An array: public centres, the
        holders' columns side by side.
    max_iter : int, default=300
        With DP, every iteration is run (the budget is split across them).
    tol : float, default=0.0
        Stop when the squared centre shift is at most ``tol`` (0: until no label changes).
    dp_epsilon, dp_delta : float or None, float
        With ``dp_epsilon`` the released model is (ε, δ)-DP per customer (Gaussian noise on
        every iteration's sums and counts, added by the manager).
    dp_bounds : (lower, upper) or None
        Public bounds of every joined feature (DP only); records are clipped into them.
    n_jobs : int or None
        Processes for the PSI's group operations.
    random_state : int or None
        Seeds the parties' sampling choices (k-means++ picks, blinding) for reproducible runs;
        keys, PSI scalars, encryption and DP noise always come from the OS CSPRNG.

    Attributes
    ----------
    labels_ : ndarray of shape (n_rows_of_holder_1,)
        Final labels of the first holder's rows (−1: not shared with every holder).
    holder_labels_ : list of ndarray
        The same for each holder's own rows.
    cluster_centers_ : ndarray of shape (n_clusters, n_features_in_)
        The released centroids, input units, the holders' columns side by side.
    n_iter_, n_features_in_, n_shared_ : int
    report_ : dict
        Wall seconds; handler seconds, bytes sent and received per party and stage; the
        number of messages; empty-cluster events; ε spent.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(-1, .2, (30, 3)), rng.normal(1, .2, (30, 3))])
    >>> model = VerticalKMeans(n_clusters=2, random_state=0).fit([X[:, :2], X[:, 2:]])
    >>> sorted(np.bincount(model.labels_).tolist()), model.cluster_centers_.shape
    ([30, 30], (2, 3))
    >>> sorted(model.report_["bytes_sent"])
    ['centre', 'holder-1', 'holder-2', 'manager']
    """

    def __init__(self, n_clusters: int = 8, *, init: str | npt.ArrayLike = "k-means++",
                 max_iter: int = 300, tol: float = 0.0, dp_epsilon: float | None = None,
                 dp_delta: float = 1e-6,
                 dp_bounds: tuple[Sequence[float], Sequence[float]] | None = None,
                 n_jobs: int | None = None, random_state: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.dp_bounds = dp_bounds
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Sequence[npt.ArrayLike], y: Any = None, *,
            ids: Sequence[Sequence[str | bytes | int]] | None = None) -> VerticalKMeans:
        """Fit on per-holder column blocks ``X`` (a list, one 2-D array per holder). With
        ``ids`` (one identifier list per holder) rows are aligned by PSI; without, the blocks
        must already be row-aligned."""
        if not isinstance(X, (list, tuple)):
            raise ValidationError("pass a list of per-holder column blocks")
        result = run_vertical(list(X), self.n_clusters, ids=ids, init=self.init,
                              max_iter=self.max_iter, tol=self.tol, dp_epsilon=self.dp_epsilon,
                              dp_delta=self.dp_delta, dp_bounds=self.dp_bounds,
                              random_state=self.random_state, n_jobs=self.n_jobs)
        self.holder_labels_ = result.labels
        self.labels_ = result.labels[0]
        self.cluster_centers_ = result.centroids
        self.n_iter_ = result.n_iter
        self.n_shared_ = result.n_shared
        self.n_features_in_ = int(result.centroids.shape[1])
        self.report_ = result.report()
        self.result_ = result
        return self

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Nearest released centroid for each row of joined columns (ties to the lower index)."""
        check_is_fitted(self, "cluster_centers_")
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise ValidationError(f"X must have shape (n, {self.n_features_in_})")
        d2 = ((arr[:, None, :] - self.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
        out: npt.NDArray[np.int64] = np.argmin(d2, axis=1).astype(np.int64)
        return out
