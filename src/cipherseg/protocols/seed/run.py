"""Protocol 4.4 with both parties in this process (every message crossing as bytes through
a :class:`~cipherseg.protocols.party.PartyLink`): for the estimator, the CLI and experiments.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ValidationError
from cipherseg.progress import Progress
from cipherseg.protocols.party import PartyLink
from cipherseg.protocols.seed.centre import SeedComputeCentre
from cipherseg.protocols.seed.owner import SeedDataOwner, SeedKMeansResult
from cipherseg.protocols.seed.params import (
    DEFAULT_CENTROID_BITS,
    check_params,
    seed_params,
)
from cipherseg.schemes.vhe import (
    VHEParams,
)


def run_seed_kmeans(x_int: npt.ArrayLike, init_centers: npt.ArrayLike, *, max_iter: int = 300,
                    tol: float = 1e-4, params: VHEParams | None = None,
                    centroid_bits: int = DEFAULT_CENTROID_BITS,
                    rng: np.random.Generator | int | None = None,
                    absolute_tol: bool = False,
                    progress: Progress | None = None) -> SeedKMeansResult:
    """Seed-mode k-means of fixed-point integer features ``x_int`` from ``init_centers``.

    **Insecure** (see the module docstring): the centre sees centroids and labels, and can
    recover the VHE key. ``tol`` is scikit-learn's relative tolerance (times the mean feature
    variance) unless ``absolute_tol``; ``init_centers`` are in the same integer units as
    ``x_int`` (need not be integers). ``params`` default to :func:`seed_params` for the data.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0, 10], [10, 0], [500, 510], [510, 500]])
    >>> res = run_seed_kmeans(X, X[[0, 2]].astype(float), rng=0)
    >>> res.labels.tolist(), res.centers.tolist()
    ([0, 0, 1, 1], [[5.0, 5.0], [505.0, 505.0]])
    """
    x = np.asarray(x_int)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValidationError(f"x_int must be a non-empty 2-D integer array, got {x.shape}")
    if x.dtype.kind not in "iu" and (
            x.dtype.kind != "f" or not np.all(np.isfinite(x)) or np.any(x != np.rint(x))):
        raise ValidationError("x_int must hold integers: encode the features first "
                              "(cipherseg.encoding.FixedPointEncoder)")
    x = x.astype(np.int64)
    init = np.asarray(init_centers, dtype=np.float64)
    n, d = x.shape
    if init.ndim != 2 or init.shape[1] != d or not 1 <= init.shape[0] <= n:
        raise ParameterError(
            f"init_centers must have shape (k, {d}) with 1 <= k <= {n}, got {init.shape}"
        )
    if not np.all(np.isfinite(init)):
        raise ParameterError("init_centers must be finite")
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ParameterError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not 0 <= centroid_bits <= 40:
        raise ParameterError(f"centroid_bits must be in [0, 40], got {centroid_bits}")
    max_abs = int(max(np.max(np.abs(x)), math.ceil(float(np.max(np.abs(init))))))
    if params is None:
        params = seed_params(n, d, max_abs)
    else:
        check_params(params, n, d, max_abs)
    abs_tol = float(tol) if absolute_tol else float(np.mean(np.var(x.astype(np.float64), axis=0))
                                                   ) * float(tol)
    centre = SeedComputeCentre()
    link = PartyLink(centre, sender="owner")
    owner = SeedDataOwner(params, centroid_bits=centroid_bits, rng=rng)
    started = time.perf_counter()
    result = owner.run(x, init, link, max_iter=max_iter, tol=abs_tol, progress=progress)
    result.report["seconds_total"] = time.perf_counter() - started
    result.report["seconds"]["centre_internal"] = dict(centre.seconds)
    return result


ESTIMATOR_MAX_FRACTION_BITS = 24


def _exact_grid_scale(xn: npt.NDArray[np.float64], decimals: int) -> float | None:
    """The scale ``10^decimals · 2^j`` (smallest j) that maps ``xn`` onto integers, if any."""
    base = float(10**decimals)
    for j in range(-64, 65):
        scaled = xn * base * 2.0**j
        if np.max(np.abs(scaled), initial=0.0) >= 2.0**62:
            return None
        ints = np.rint(scaled)
        if np.all(np.abs(ints - scaled) <= 1e-6) and not np.any((ints == 0) & (xn != 0)):
            return base * 2.0**j
    return None


def run_seed_kmeans_for_estimator(xn: npt.NDArray[np.float64], n_clusters: int, *,
                                  init: npt.NDArray[np.float64] | None, max_iter: int,
                                  tol: float, random_state: int | None,
                                  decimals: int | None) -> dict[str, Any]:
    """``EncryptedKMeans(scheme="vhe")``: seed mode on normalised features (|x| ≤ 1).

    Encoding: with ``decimals`` the features' own decimal grid (found exactly, whatever the
    normalisation); without, the finest power-of-two grid ``2^-f`` (f ≤ 24) whose parameters
    still fit 64-bit arithmetic. ``init=None``: scikit-learn's k-means++ run by the owner on
    its own plaintext data. ``tol`` is absolute, in the units of ``xn``.

    >>> import numpy as np
    >>> X = np.array([[0.0, 0.1], [0.1, 0.0], [0.9, 1.0], [1.0, 0.9]])
    >>> out = run_seed_kmeans_for_estimator(X, 2, init=X[[0, 2]], max_iter=10, tol=0.0,
    ...                                     random_state=0, decimals=None)
    >>> out["labels"].tolist()
    [0, 0, 1, 1]
    """
    from sklearn.cluster import kmeans_plusplus

    xn = np.asarray(xn, dtype=np.float64)
    n, d = xn.shape
    scale: float | None = None
    fraction_bits: int | None = None
    if decimals is not None:
        scale = _exact_grid_scale(xn, int(decimals))
    if scale is None:
        peak = max(float(np.max(np.abs(xn), initial=0.0)), 1e-300)
        for f in range(ESTIMATOR_MAX_FRACTION_BITS, 3, -1):
            max_abs = math.ceil(peak * 2.0**f)
            if seed_params(n, d, max_abs).ciphertext_bits <= 64:
                break
        fraction_bits = f
        scale = 2.0**f
    x_int = np.rint(xn * scale).astype(np.int64)
    seed = random_state if random_state is not None else secrets.randbits(31)
    rng = np.random.default_rng(seed)
    if init is None:
        init_n, _ = kmeans_plusplus(xn, n_clusters, random_state=int(rng.integers(2**31 - 1)))
    else:
        init_n = np.asarray(init, dtype=np.float64)
    res = run_seed_kmeans(x_int, init_n * scale, max_iter=max_iter, tol=tol * scale**2,
                          absolute_tol=True, rng=rng)
    centers = res.centers / scale
    diff = xn - centers[res.labels]
    report = dict(res.report)
    report["encoding"] = {"scale": scale, "fraction_bits": fraction_bits, "decimals": decimals}
    return {"labels": res.labels, "centers": centers, "init_centers": init_n,
            "inertia": float(np.einsum("ij,ij->", diff, diff)), "n_iter": res.n_iter,
            "report": report}
