"""scikit-learn-style estimators that compute on encrypted data.

:class:`EncryptedKMeans` runs protocol 4.1 (:mod:`cipherseg.protocols.outsourced`):
the estimator plays the data owner; a
:class:`~cipherseg.protocols.outsourced.centre.ComputeCentre` that holds only the public context
does the ciphertext work, reached through a :class:`~cipherseg.protocols.party.PartyLink`
(both parties in this process: one trust domain, for the library, the CLI and tests), or a
centre running elsewhere reached through ``fit(X, centre=HttpTransport(...))``
(:mod:`cipherseg.transport.http`; the platform runs the centre as its own process).
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from cipherseg.encoding import FixedPointEncoder
from cipherseg.engine.base import Executor
from cipherseg.engine.factory import PartyExecutors
from cipherseg.engine.local import LocalExecutor, resolve_n_jobs
from cipherseg.errors import ParameterError
from cipherseg.progress import Progress
from cipherseg.protocols.party import Link, PartyLink

SCHEMES = ("ckks", "vhe")


def normalising_scale(X: npt.NDArray[np.float64]) -> float:
    """The power of two σ with max|X/σ| ≤ 1 (exact in floating point; k-means is equivariant).

    >>> normalising_scale(np.array([[3.0, -0.2]]))
    4.0
    """
    peak = float(np.max(np.abs(X))) if X.size else 0.0
    return 1.0 if peak == 0.0 else float(2.0 ** math.ceil(math.log2(peak)))


class EncryptedKMeans(ClusterMixin, BaseEstimator):  # type: ignore[misc]
    """K-means whose heavy computation runs on encrypted data at a compute centre.

    The data owner (this estimator) encrypts the features, the compute centre computes
    encrypted distance scores and per-cluster sums; the owner only decrypts scores and
    aggregates. Results equal scikit-learn's :class:`~sklearn.cluster.KMeans` started from
    the same centres (``init_centers_``), up to CKKS precision (about 1e-6 on the features
    normalised to |x| ≤ 1).

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++"} or ndarray of shape (n_clusters, n_features), default="k-means++"
        "k-means++" runs the encrypted k-means++ with secure selection (plain k-means++:
        one candidate per step, unlike scikit-learn's greedy variant).
    max_iter : int, default=300
    tol : float, default=1e-4
        Relative tolerance on the squared centre shift, as in scikit-learn (scaled by the
        mean feature variance).
    random_state : int, RandomState instance or None, default=None
        Seeds the parties' sampling (tests, reproducible runs). ``None``: fresh randomness.
    scheme : {"ckks", "vhe"}, default="ckks"
        "vhe" is the original system's broken scheme, for reproduction only.
    n_jobs : int or None, default=None
        Worker processes for block work (each party uses its own pool); -1 for all cores.
    decimals : int or None, default=None
        If set, features are first quantised to the fixed-point grid 10^-decimals
        (:class:`~cipherseg.encoding.FixedPointEncoder`).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
    inertia_ : float
    n_iter_ : int
    n_features_in_ : int
    init_centers_ : ndarray of shape (n_clusters, n_features)
        The centres the Lloyd iterations started from.
    report_ : dict
        Seconds per stage and party, bytes each way, MB per iteration, leakage summary.

    Examples
    --------
    >>> import numpy as np
    >>> from cipherseg import EncryptedKMeans
    >>> X = np.array([[0.0, 0.1], [0.1, 0.0], [5.0, 5.1], [5.1, 5.0]])
    >>> km = EncryptedKMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    """

    def __init__(self, n_clusters: int = 8, *, init: str | npt.ArrayLike = "k-means++",
                 max_iter: int = 300, tol: float = 1e-4, random_state: Any = None,
                 scheme: str = "ckks", n_jobs: int | None = None,
                 decimals: int | None = None) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.scheme = scheme
        self.n_jobs = n_jobs
        self.decimals = decimals

    # --- validation ------------------------------------------------------------------------
    def _check_params(self, n_samples: int, n_features: int) -> None:
        """The allowed parameter values (those the class docstring lists), checked at fit."""
        def is_int(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        if not is_int(self.n_clusters) or self.n_clusters < 1:
            raise ParameterError(f"n_clusters must be an integer >= 1, got {self.n_clusters!r}")
        if n_samples < self.n_clusters:
            raise ParameterError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}."
            )
        if not is_int(self.max_iter) or self.max_iter < 1:
            raise ParameterError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ParameterError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.scheme not in SCHEMES:
            raise ParameterError(
                f"scheme must be one of {', '.join(SCHEMES)}; got {self.scheme!r}"
            )
        resolve_n_jobs(self.n_jobs)
        if self.decimals is not None:
            FixedPointEncoder(self.decimals)
        if isinstance(self.init, str):
            if self.init != "k-means++":
                raise ParameterError(f"init must be 'k-means++' or an array, got {self.init!r}")
        else:
            init = np.asarray(self.init, dtype=np.float64)
            if init.shape != (self.n_clusters, n_features):
                raise ParameterError(
                    f"init has shape {init.shape}; expected ({self.n_clusters}, {n_features})"
                )

    # --- estimator API ---------------------------------------------------------------------
    def fit(self, X: npt.ArrayLike, y: Any = None, *, progress: Progress | None = None,
            executor: Executor | PartyExecutors | None = None,
            centre: Link | None = None) -> EncryptedKMeans:
        """Cluster ``X`` on encrypted data.

        ``progress(stage, done, total)`` is called as stages advance (the CLI's progress
        bars); ``executor`` replaces the default local process pools: one executor for both
        parties' block work, or a :class:`~cipherseg.engine.factory.PartyExecutors` giving each
        party its own — the way to run the centre on a Dask cluster, where the owner's secret
        context cannot and must not go (:func:`cipherseg.engine.make_executors`).
        ``centre`` is a transport to a compute centre running elsewhere
        (:class:`~cipherseg.transport.http.HttpTransport` to ``cipherseg centre serve``);
        by default the centre runs in this process. With a remote centre, ``executor`` serves
        the owner's block work only, and the centre's own choices (first k-means++ centre,
        masks) come from its CSPRNG, not from ``random_state``.
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        X = np.asarray(X, dtype=np.float64)
        self._check_params(*X.shape)
        if self.scheme == "vhe":
            warnings.warn(
                "scheme='vhe' is the original system's vector HE: it is broken (the secret "
                "key is recoverable from public keys) and its seed mode shows centroids and "
                "memberships to the centre. Use it only to reproduce the original experiments.",
                UserWarning, stacklevel=2,
            )
        rng = check_random_state(self.random_state)
        if self.decimals is not None:
            X = FixedPointEncoder(self.decimals).quantise(X)
        sigma = normalising_scale(X)
        Xn = X / sigma
        tol = float(np.mean(np.var(Xn, axis=0))) * float(self.tol)
        init = None if isinstance(self.init, str) else np.asarray(self.init, float) / sigma
        # A seed makes a run reproducible (tests, experiments); without one, both parties draw
        # their protocol randomness (first centre, masks, permutations) from the OS CSPRNG,
        # never from numpy's global Mersenne Twister.
        centre_seed: int | None = None
        owner_seed: int | None = None
        if self.random_state is not None:
            centre_seed, owner_seed = (int(v) for v in rng.randint(0, 2**31 - 1, size=2))
        started = time.perf_counter()
        run = self._run(Xn, init, tol, centre_seed, owner_seed, self.max_iter,
                        progress, executor, centre)
        self.cluster_centers_ = run["centers"] * sigma
        self.init_centers_ = run["init_centers"] * sigma
        if self.decimals is not None and init is None:
            # k-means++ picks records, which lie on the fixed-point grid; decryption returns
            # them with ~1e-8 of noise, which rounding removes.
            self.init_centers_ = np.round(self.init_centers_, self.decimals)
        self.labels_ = run["labels"]
        self.inertia_ = float(run["inertia"]) * sigma**2
        self.n_iter_ = int(run["n_iter"])
        self.report_ = dict(run["report"], seconds_total=time.perf_counter() - started)
        return self

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Nearest fitted centre of each row, computed by the same encrypted protocol."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        X = np.asarray(X, dtype=np.float64)
        if self.decimals is not None:
            X = FixedPointEncoder(self.decimals).quantise(X)
        sigma = max(normalising_scale(X), normalising_scale(self.cluster_centers_))
        run = self._run(X / sigma, self.cluster_centers_ / sigma, 0.0, None, None, 0, None, None,
                        None)
        labels: npt.NDArray[np.int64] = run["labels"]
        return labels

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags

    # --- the protocol ------------------------------------------------------------------------
    def _run(self, Xn: npt.NDArray[np.float64], init: npt.NDArray[np.float64] | None,
             tol: float, centre_seed: int | None, owner_seed: int | None, max_iter: int,
             progress: Progress | None, executor: Executor | PartyExecutors | None,
             remote: Link | None) -> dict[str, Any]:
        if self.scheme == "vhe":
            if remote is not None:
                raise ParameterError("scheme='vhe' (seed mode) runs its centre in-process only; "
                                     "use scheme='ckks' with a remote centre")
            from cipherseg.protocols.seed.run import run_seed_kmeans_for_estimator

            result: dict[str, Any] = run_seed_kmeans_for_estimator(
                Xn, self.n_clusters, init=init, max_iter=max_iter, tol=tol,
                random_state=owner_seed, decimals=self.decimals,
            )
            return result
        from cipherseg.protocols.outsourced.centre import ComputeCentre
        from cipherseg.protocols.outsourced.owner import LEAKAGE_4_1, DataOwner

        given_owner, given_centre = ((executor.owner, executor.centre)
                                     if isinstance(executor, PartyExecutors)
                                     else (executor, executor))
        owner_exec = given_owner if given_owner is not None else LocalExecutor(self.n_jobs)
        centre_exec = None
        try:
            if remote is None:
                centre_exec = (given_centre if given_centre is not None
                               else LocalExecutor(self.n_jobs))
                centre = ComputeCentre(executor=centre_exec, random_state=centre_seed)
                link: Link = PartyLink(centre, sender="owner")
            else:
                link = remote
            owner = DataOwner(executor=owner_exec, random_state=owner_seed)
            run = owner.run_kmeans(Xn, self.n_clusters, link, max_iter=max_iter, tol=tol,
                                   init=init, progress=progress)
        finally:
            if executor is None:
                owner_exec.close()
                if centre_exec is not None:
                    centre_exec.close()
        per_iter = run.bytes_per_iteration
        report = {
            "scheme": "ckks",
            "protocol": "4.1 outsourced k-means",
            "ckks": {"poly_modulus_degree": owner.params.poly_modulus_degree,
                     "coeff_mod_bit_sizes": list(owner.params.coeff_mod_bit_sizes),
                     "scale_bits": owner.params.scale_bits},
            "n_blocks": run.n_blocks,
            "seconds": run.seconds,
            "bytes_to_centre": run.bytes_to_centre,
            "bytes_to_owner": run.bytes_to_owner,
            "mb_per_iteration": [b / 1e6 for b in per_iter],
            "leakage": LEAKAGE_4_1,
        }
        return {"labels": run.labels, "centers": run.centers, "init_centers": run.init_centers,
                "inertia": run.inertia, "n_iter": run.n_iter, "report": report}
