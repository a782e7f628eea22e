"""EncryptedKMeans against scikit-learn's KMeans from the same initial centres."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from cipherseg import EncryptedKMeans
from cipherseg.errors import ParameterError

# CKKS works on features normalised to |x| <= 1 with ~1e-6 absolute error; centroids are
# means of thousands of such values, so they agree with float64 to far better than this.
CENTRE_RTOL = 1e-5


def _skewed_rfm(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    recency = rng.exponential(60, n)
    frequency = rng.poisson(3, n) + 1
    monetary = rng.lognormal(4, 1, n)
    X = np.log1p(np.column_stack([recency, frequency, monetary]))
    return (X - X.mean(0)) / X.std(0)


DATASETS = {
    "blobs-k2": (lambda: make_blobs(3000, 3, centers=2, random_state=1)[0], 2),
    "blobs-k5": (lambda: make_blobs(5000, 4, centers=5, random_state=2, cluster_std=2.5)[0], 5),
    "skewed-rfm-k4": (lambda: _skewed_rfm(6000, 3), 4),
    "skewed-rfm-k8": (lambda: _skewed_rfm(5000, 4), 8),
    "two-blocks-k3": (lambda: make_blobs(9000, 2, centers=3, random_state=5)[0] * 1000.0, 3),
}


@pytest.mark.parametrize("name", DATASETS)
def test_matches_sklearn_from_the_same_init(name: str) -> None:
    make, k = DATASETS[name]
    X = make()
    enc = EncryptedKMeans(n_clusters=k, max_iter=50, random_state=0).fit(X)
    ref = KMeans(n_clusters=k, init=enc.init_centers_, n_init=1, max_iter=50).fit(X)
    assert adjusted_rand_score(ref.labels_, enc.labels_) >= 0.999
    np.testing.assert_allclose(enc.cluster_centers_, ref.cluster_centers_,
                               rtol=CENTRE_RTOL, atol=CENTRE_RTOL * np.abs(X).max())
    assert enc.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    assert enc.n_iter_ == ref.n_iter_


def test_init_centres_are_records_of_the_data() -> None:
    X = _skewed_rfm(2000, 7)
    enc = EncryptedKMeans(n_clusters=4, max_iter=5, random_state=1).fit(X)
    dist = np.abs(X[:, None, :] - enc.init_centers_[None, :, :]).max(axis=2).min(axis=0)
    assert np.all(dist < 1e-5)


def test_given_init_is_used_and_predict_agrees_with_labels() -> None:
    X, _ = make_blobs(1500, 2, centers=3, random_state=3)
    init = X[[0, 500, 1000]]
    enc = EncryptedKMeans(n_clusters=3, init=init, max_iter=30).fit(X)
    np.testing.assert_allclose(enc.init_centers_, init)
    assert np.array_equal(enc.predict(X), enc.labels_)
    ref = KMeans(3, init=init, n_init=1, max_iter=30).fit(X)
    assert adjusted_rand_score(ref.labels_, enc.labels_) >= 0.999


def test_empty_clusters_are_relocated_like_scikit_learn() -> None:
    # A start nobody is nearest to: scikit-learn moves that centre to the record farthest
    # from its centre, and so must the owner (protocol 4.1), or the runs part ways.
    X, _ = make_blobs(2000, 3, centers=3, random_state=4)
    init = np.vstack([X[:3], [[40.0, 40.0, 40.0]]])
    enc = EncryptedKMeans(n_clusters=4, init=init, max_iter=30).fit(X)
    ref = KMeans(4, init=init, n_init=1, max_iter=30).fit(X)
    assert np.abs(enc.cluster_centers_).max() < np.abs(X).max()  # the far centre moved
    assert adjusted_rand_score(ref.labels_, enc.labels_) >= 0.999
    np.testing.assert_allclose(enc.cluster_centers_, ref.cluster_centers_,
                               rtol=CENTRE_RTOL, atol=CENTRE_RTOL * np.abs(X).max())
    assert enc.n_iter_ == ref.n_iter_


def test_decimals_quantises_before_encryption() -> None:
    X = _skewed_rfm(1000, 8)
    enc = EncryptedKMeans(n_clusters=3, random_state=0, decimals=2, max_iter=20).fit(X)
    Xq = np.round(X, 2)
    ref = KMeans(3, init=enc.init_centers_, n_init=1, max_iter=20).fit(Xq)
    assert adjusted_rand_score(ref.labels_, enc.labels_) >= 0.999


def test_report_states_costs_and_leakage() -> None:
    X = _skewed_rfm(5000, 9)
    enc = EncryptedKMeans(n_clusters=3, random_state=0, max_iter=3).fit(X)
    r = enc.report_
    assert r["n_blocks"] == 2
    assert set(r["seconds"]) == {"owner", "centre"}
    assert r["bytes_to_centre"] > 0 and r["bytes_to_owner"] > 0
    assert len(r["mb_per_iteration"]) == enc.n_iter_
    assert "compute_centre" in r["leakage"] and "no plaintext value" in r["leakage"][
        "compute_centre"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_clusters": 0}, "n_clusters must be an integer >= 1"),
        ({"n_clusters": 50}, "n_samples=20 should be >= n_clusters=50"),
        ({"scheme": "rsa"}, "scheme must be one of"),
        ({"init": "random"}, r"init must be 'k-means\+\+' or an array"),
        ({"init": np.zeros((2, 5))}, "init has shape"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"decimals": 20}, "decimals must be between 0 and 12"),
        ({"n_jobs": 0}, "n_jobs must be a non-zero integer"),
    ],
)
def test_bad_parameters_get_clear_errors(params: dict[str, object], message: str) -> None:
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ParameterError, match=message):
        EncryptedKMeans(**{"n_clusters": 2, **params}).fit(X)  # type: ignore[arg-type]


def test_nan_input_is_refused() -> None:
    X = np.ones((10, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        EncryptedKMeans(n_clusters=2).fit(X)


@pytest.mark.slow
def test_two_worker_processes_give_the_same_labels() -> None:
    X = _skewed_rfm(9000, 11)
    one = EncryptedKMeans(n_clusters=4, random_state=3, max_iter=10).fit(X)
    two = EncryptedKMeans(n_clusters=4, random_state=3, max_iter=10, n_jobs=2).fit(X)
    np.testing.assert_allclose(one.init_centers_, two.init_centers_, atol=1e-6)
    assert adjusted_rand_score(one.labels_, two.labels_) >= 0.999


@pytest.mark.slow
@parametrize_with_checks([EncryptedKMeans(n_clusters=3, max_iter=20, random_state=0)])  # type: ignore[misc]
def test_sklearn_estimator_checks(estimator: EncryptedKMeans, check: object) -> None:
    check(estimator)  # type: ignore[operator]


def test_without_random_state_the_protocol_randomness_is_not_numpys_global_rng() -> None:
    # Before: both parties were seeded from np.random's global Mersenne Twister, so resetting
    # it reproduced the centre's first pick and the owner's draws. Now they use the OS CSPRNG.
    X = make_blobs(2000, 3, centers=3, random_state=7)[0]
    inits = []
    for _ in range(2):
        np.random.seed(0)
        km = EncryptedKMeans(n_clusters=3, max_iter=1, n_jobs=1).fit(X)
        inits.append(km.init_centers_)
    assert not np.allclose(inits[0], inits[1])
    seeded = [EncryptedKMeans(n_clusters=3, max_iter=1, n_jobs=1, random_state=5).fit(X)
              for _ in range(2)]
    np.testing.assert_allclose(seeded[0].init_centers_, seeded[1].init_centers_, atol=1e-6)
