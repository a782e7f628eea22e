"""Seed-mode k-means (protocol 4.4) on VHE against scikit-learn from the same initial centres."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from cipherseg.errors import ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import PartyLink
from cipherseg.protocols.seed import centre as sc
from cipherseg.protocols.seed import messages as sm
from cipherseg.protocols.seed import owner as so
from cipherseg.protocols.seed import params as sp
from cipherseg.protocols.seed import run as sr
from cipherseg.schemes.vhe import VHEParams
from cipherseg.schemes.vhe_keys import VHESecretKey
from cipherseg.transport.inprocess import InProcessTransport


def blobs(n: int, seed: int, decimals: int = 2, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x, _ = make_blobs(n, n_features=d, centers=4, cluster_std=1.6, random_state=seed)
    x_int = np.rint(x * 10**decimals).astype(np.int64)
    return x_int, x_int / 10**decimals


def sklearn_from(x: np.ndarray, init: np.ndarray, **kw: object) -> KMeans:
    return KMeans(init.shape[0], init=init, n_init=1, algorithm="lloyd", **kw).fit(x)


# Tolerance: labels ARI >= 0.999; centres within 1e-9 (both divide the same exact sums by the
# same counts; the centre's centroid grid 2^-20 only matters for points within ~2^-21
# plaintext units of a boundary, none in these data).
@pytest.mark.parametrize("seed, k, n", [(0, 4, 20_000), (1, 3, 20_000), (2, 6, 8_000)])
def test_labels_and_centres_match_scikit_learn(seed: int, k: int, n: int) -> None:
    x_int, x = blobs(n, seed)
    init_idx = np.random.default_rng(seed).choice(len(x), size=k, replace=False)
    res = sr.run_seed_kmeans(x_int, x_int[init_idx].astype(float), rng=seed)
    ref = sklearn_from(x, x[init_idx])
    assert adjusted_rand_score(ref.labels_, res.labels) >= 0.999
    assert np.allclose(res.centers / 100, ref.cluster_centers_, atol=1e-9, rtol=0)
    assert res.n_iter == ref.n_iter_
    assert res.inertia / 1e4 == pytest.approx(ref.inertia_, rel=1e-9)


@pytest.mark.slow
def test_100k_customers_k4() -> None:
    x_int, x = blobs(100_000, 7)
    res = sr.run_seed_kmeans(x_int, x_int[:4].astype(float), rng=0)
    ref = sklearn_from(x, x[:4])
    assert adjusted_rand_score(ref.labels_, res.labels) >= 0.999
    assert res.report["vhe"]["backend"] == "uint64"


def test_empty_clusters_are_relocated_like_scikit_learn() -> None:
    x_int, x = blobs(2_000, 3)
    init = np.vstack([x_int[:3], [[10**6, 10**6, 10**6]]]).astype(float)  # nobody near it
    res = sr.run_seed_kmeans(x_int, init, rng=0)
    ref = sklearn_from(x, init / 100)
    assert adjusted_rand_score(ref.labels_, res.labels) >= 0.999
    assert np.allclose(res.centers / 100, ref.cluster_centers_, atol=1e-9)


def test_python_integer_path_gives_the_same_clustering() -> None:
    x_int, _ = blobs(1_000, 5)
    big = sp.seed_params(1_000, 3, int(np.abs(x_int).max()), min_ciphertext_bits=80)
    assert big.backend == "object"
    a = sr.run_seed_kmeans(x_int, x_int[:4].astype(float), params=big, rng=0, max_iter=20)
    b = sr.run_seed_kmeans(x_int, x_int[:4].astype(float), rng=0, max_iter=20)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centers, b.centers)


def test_max_iter_zero_assigns_to_the_initial_centres() -> None:
    x_int, _ = blobs(500, 6)
    init = x_int[:4].astype(float)
    res = sr.run_seed_kmeans(x_int, init, max_iter=0, rng=0)
    expected = np.argmin(((x_int[:, None, :] - init[None]) ** 2).sum(-1), axis=1)
    assert np.array_equal(res.labels, expected) and res.n_iter == 0


def test_estimator_wiring_scheme_vhe() -> None:
    from cipherseg import EncryptedKMeans

    x_raw, _ = make_blobs(3_000, n_features=3, centers=4, random_state=8)
    init = x_raw[:4]
    with pytest.warns(UserWarning, match="broken"):
        km = EncryptedKMeans(4, init=init, scheme="vhe", random_state=0, decimals=2).fit(x_raw)
    ref = sklearn_from(np.round(x_raw, 2), init)
    assert adjusted_rand_score(ref.labels_, km.labels_) >= 0.999
    assert np.allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-9)
    assert km.report_["scheme"] == "vhe" and "EVERYTHING" in km.report_["leakage"][
        "compute_centre"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(km.predict(x_raw[:50]), km.labels_[:50])
        # k-means++ by the owner; no decimals: the finest 64-bit power-of-two grid
        km2 = EncryptedKMeans(4, scheme="vhe", random_state=1).fit(x_raw)
    assert km2.report_["encoding"]["fraction_bits"] >= 12
    assert sorted(np.bincount(km2.labels_)) == sorted(np.bincount(
        sklearn_from(x_raw, km2.init_centers_).labels_))


# --- the leak is real ----------------------------------------------------------------------
def test_centre_holds_plaintext_centroids_and_no_secret_key() -> None:
    x_int, _ = blobs(1_000, 9)
    centre = sc.SeedComputeCentre()
    link = PartyLink(centre, sender="owner")
    sessions: list[str] = []

    def handler(data: bytes) -> bytes:
        msg = Message.from_bytes(data)
        sessions.append(msg.session_id)
        if isinstance(msg, sm.SeedClose):  # look before the session is dropped
            history = centre.centroid_history(msg.session_id)
            assert history[0] == (x_int[:4].astype(object) * 2**20).tolist()
            assert not centre.holds_secret_key()
        return link.request_bytes(data)

    owner = so.SeedDataOwner(sp.seed_params(1_000, 3, int(np.abs(x_int).max())), rng=0)
    owner.run(x_int, x_int[:4].astype(float), InProcessTransport(handler), max_iter=5, tol=0.0)
    assert len(set(sessions)) == 1


def test_the_centres_custody_check_sees_a_key_it_was_slipped() -> None:
    # The centre recognises public material by an allowlist (it cannot import vhe_keys):
    # anything else in a session, a secret key above all, makes the check fail.
    x_int, _ = blobs(200, 10)
    params = sp.seed_params(200, 3, int(np.abs(x_int).max()))
    centre = sc.SeedComputeCentre()
    key = VHESecretKey.generate(params, rng=np.random.default_rng(1))
    ctx = key.ctx
    eye = np.eye(3, dtype=np.int64)
    out_key = VHESecretKey.generate(params, plain_dim=1, rng=np.random.default_rng(2))
    upload = sm.SeedUpload(protocol_version=1, session_id="s", round=1,
                           params_json=params.to_json(), n_clusters=2,
                           ciphertexts=ctx.ciphertexts_to_bytes(key.encrypt(x_int)),
                           feature_keys=tuple(ctx.key_to_bytes(key.linear_transform_key(
                               eye[f:f + 1], out_key)) for f in range(3)))
    centre.handle("owner", upload)
    assert not centre.holds_secret_key()
    session = next(iter(centre._sessions.values()))
    session.centroids = key  # type: ignore[assignment]
    assert centre.holds_secret_key()


# --- messages ------------------------------------------------------------------------------
MESSAGE_TYPES = [sm.SeedUpload, sm.SeedUploadAck, sm.SeedCentroids, sm.SeedScores,
                 sm.SeedLabels, sm.SeedSums, sm.SeedClose, sm.SeedCloseAck]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(MESSAGE_TYPES), st.data())
def test_message_round_trip(cls: type[Message], data: st.DataObject) -> None:
    kwargs: dict[str, object] = {"protocol_version": 1,
                                 "session_id": data.draw(st.text(max_size=8)),
                                 "round": data.draw(st.integers(0, 10**6))}
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            continue
        if f.type == "bytes":
            kwargs[f.name] = data.draw(st.binary(max_size=64))
        elif f.type.startswith("tuple[bytes"):
            kwargs[f.name] = tuple(data.draw(st.lists(st.binary(min_size=1, max_size=16),
                                                      max_size=4)))
        elif f.type.startswith("tuple[int"):
            kwargs[f.name] = tuple(data.draw(st.lists(st.integers(-2**70, 2**70), max_size=6)))
        elif f.type == "int":
            kwargs[f.name] = data.draw(st.integers(0, 2**31))
        elif f.type == "str":
            kwargs[f.name] = data.draw(st.text(max_size=20))
    msg = cls(**kwargs)
    assert Message.from_bytes(msg.to_bytes()) == msg


def test_unknown_version_and_out_of_order_messages_are_refused() -> None:
    bad = sm.SeedClose(protocol_version=99, session_id="s", round=1)
    with pytest.raises(ProtocolError, match="version 99"):
        Message.from_bytes(bad.to_bytes())
    centre = sc.SeedComputeCentre()
    with pytest.raises(ProtocolError, match="unknown session"):
        centre.handle("owner", sm.SeedLabels(protocol_version=1, session_id="nope", round=1))
    params = VHEParams.for_workload(2, 8, max_terms=100)
    key = VHESecretKey.generate(params, rng=0)
    out = VHESecretKey.generate(params, plain_dim=1, rng=1)
    ctx = key.ctx
    upload = sm.SeedUpload(
        protocol_version=1, session_id="s", round=1, params_json=params.to_json(), n_clusters=1,
        ciphertexts=ctx.ciphertexts_to_bytes(key.encrypt([[1, 2], [3, 4]])),
        feature_keys=tuple(ctx.key_to_bytes(key.linear_transform_key(g, out))
                           for g in ([[1, 0]], [[0, 1]])))
    centre.handle("owner", upload)
    with pytest.raises(ProtocolError, match="expected SeedCentroids"):
        centre.handle("owner", sm.SeedLabels(protocol_version=1, session_id="s", round=2))
    with pytest.raises(ProtocolError, match="n_clusters"):
        centre.handle("owner", dataclasses.replace(upload, session_id="t", n_clusters=3))


# --- bad input -----------------------------------------------------------------------------
def test_bad_input_is_refused_with_a_reason() -> None:
    x_int, _ = blobs(200, 1)
    init = x_int[:2].astype(float)
    with pytest.raises(ValidationError, match="integers"):
        sr.run_seed_kmeans(x_int + 0.5, init)
    with pytest.raises(ParameterError, match="init_centers must have shape"):
        sr.run_seed_kmeans(x_int, init[:, :2])
    with pytest.raises(ParameterError, match="max_terms"):
        sr.run_seed_kmeans(x_int, init, params=VHEParams.for_workload(3, 16, max_terms=10))
    with pytest.raises(ParameterError, match="features"):
        sr.run_seed_kmeans(x_int, init, params=sp.seed_params(200, 2, 10**4))
