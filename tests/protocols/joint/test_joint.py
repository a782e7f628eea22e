"""Protocol 4.2: joint k-means equals plaintext k-means on the pooled data from the same
init; custody (the centre holds no key, sees no plaintext); refusals; messages; DP; the
reconstruction risk DP answers; separate processes."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import cipherseg.protocols.joint.messages as jm
from cipherseg.encoding import FixedPointEncoder
from cipherseg.errors import EncodingError, ParameterError, ProtocolError, ValidationError
from cipherseg.protocols.delivery import deliver
from cipherseg.protocols.dp import DPConfig
from cipherseg.protocols.joint import JointKMeans
from cipherseg.protocols.joint.centre import JointCentre
from cipherseg.protocols.joint.manager import JointManager
from cipherseg.protocols.joint.owner import JointOwner
from cipherseg.protocols.joint.runner import run_joint_kmeans
from cipherseg.protocols.messages import Message
from cipherseg.protocols.party import NotReady
from cipherseg.schemes.threshold import ThresholdAggregation
from cipherseg.schemes.threshold_keys import KeyShare

DECIMALS = 3


def blobs(n_owners: int, per_owner: int, seed: int = 0) -> list[np.ndarray]:
    X, _ = make_blobs(n_owners * per_owner, n_features=3, centers=4, cluster_std=1.2,
                      random_state=seed)
    X = X * 7 + 40  # business-like units
    return np.array_split(X, n_owners)


def sklearn_pooled(parts: list[np.ndarray], init: np.ndarray) -> KMeans:
    pooled = FixedPointEncoder(decimals=DECIMALS).quantise(np.vstack(parts))
    return KMeans(init.shape[0], init=init, n_init=1, max_iter=300, tol=0.0,
                  algorithm="lloyd").fit(pooled)


# ---------------------------------------------------------------- equality with plaintext
@pytest.mark.parametrize(("n_owners", "per_owner"), [(3, 1500), (2, 900), (6, 300)])
def test_joint_kmeans_equals_plaintext_kmeans_on_pooled_data(n_owners: int,
                                                             per_owner: int) -> None:
    parts = blobs(n_owners, per_owner, seed=n_owners)
    result = run_joint_kmeans(parts, 4, decimals=DECIMALS, random_state=7)
    reference = sklearn_pooled(parts, result.init_centres)
    labels = np.concatenate(result.labels)
    assert adjusted_rand_score(reference.labels_, labels) >= 0.999
    # Both are means of the same fixed-point data: equal up to float rounding, far inside
    # the fixed-point precision 10^-3.
    assert np.abs(result.centroids - reference.cluster_centers_).max() <= 1e-9
    # k-means++ picked real (quantised) records as initial centres.
    pooled = FixedPointEncoder(decimals=DECIMALS).quantise(np.vstack(parts))
    for c in result.init_centres:
        assert np.isclose(pooled, c, rtol=0, atol=1e-9).all(axis=1).any()
    assert result.log.d2_totals[0] == [float(p.shape[0]) for p in parts]  # step 0: counts


def test_threshold_and_plain_aggregation_give_identical_runs() -> None:
    parts = blobs(3, 400, seed=11)
    enc = run_joint_kmeans(parts, 3, decimals=DECIMALS, random_state=5)
    plain = run_joint_kmeans(parts, 3, decimals=DECIMALS, random_state=5, mode="plain")
    np.testing.assert_array_equal(enc.init_centres, plain.init_centres)
    np.testing.assert_array_equal(enc.centroids, plain.centroids)
    assert enc.n_iter == plain.n_iter
    for a, b in zip(enc.log.aggregates, plain.log.aggregates, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_estimator_api_and_owner_index_input() -> None:
    parts = blobs(2, 300, seed=3)
    model = JointKMeans(n_clusters=4, decimals=DECIMALS, random_state=1).fit(parts)
    X = np.vstack(parts)
    owners = np.repeat([0, 1], [p.shape[0] for p in parts])
    shuffled = np.random.default_rng(0).permutation(X.shape[0])
    again = JointKMeans(n_clusters=4, decimals=DECIMALS, random_state=1).fit(
        X[shuffled], owners=owners[shuffled])
    assert adjusted_rand_score(model.labels_[shuffled], again.labels_) == 1.0
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert model.n_features_in_ == 3 and model.n_iter_ >= 1 and model.dp_epsilon_spent_ is None
    with pytest.raises(ValidationError, match="list of per-owner arrays"):
        JointKMeans(n_clusters=2).fit(X)
    with pytest.raises(ParameterError, match="n_clusters"):
        JointKMeans(n_clusters=0).fit(parts)


def test_given_public_init_is_used_as_is() -> None:
    parts = blobs(2, 300, seed=4)
    init = np.vstack(parts)[[0, 100, 200, 400]]
    result = run_joint_kmeans(parts, 4, init=init, decimals=DECIMALS, random_state=2)
    np.testing.assert_array_equal(result.init_centres, init)
    assert result.log.d2_totals == []  # no k-means++ round happened


# ---------------------------------------------------------------- custody and leakage
class Recorder:
    """Wraps a party and records every message it receives."""

    def __init__(self, party: JointCentre) -> None:
        self.inner = party
        self.name = party.name
        self.timings = party.timings
        self.received: list[Message] = []

    def handle(self, sender: str, message: Message) -> list[tuple[str, Message]]:
        self.received.append(message)
        return self.inner.handle(sender, message)


def _objects(root: object, seen: set[int] | None = None) -> list[object]:
    seen = seen if seen is not None else set()
    if id(root) in seen or isinstance(root, (str, bytes, int, float, np.ndarray, type)):
        return []
    seen.add(id(root))
    found = [root]
    if isinstance(root, dict):
        children = list(root.keys()) + list(root.values())
    elif isinstance(root, (list, tuple, set)):
        children = list(root)
    elif dataclasses.is_dataclass(root) or hasattr(root, "__dict__") or hasattr(root, "__slots__"):
        names = list(getattr(root, "__dict__", {}))
        for cls in type(root).__mro__:
            names += list(getattr(cls, "__slots__", ()))
        children = [getattr(root, n) for n in names if hasattr(root, n)]
    else:
        children = []
    for child in children:
        found += _objects(child, seen)
    return found


def test_the_centre_holds_no_key_share_and_receives_only_ciphertexts() -> None:
    parts = blobs(3, 200, seed=8)
    manager = JointManager([1, 2, 3], 3, 4, decimals=DECIMALS, random_state=3)
    owners = [JointOwner(i, X, random_state=i) for i, X in zip([1, 2, 3], parts, strict=True)]
    centre = Recorder(JointCentre())
    parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
    deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])
    kinds = {type(m) for m in centre.received}
    assert kinds == {jm.Setup, jm.KeyCommitment, jm.PublicKeyShare, jm.EncryptedVector, jm.Close}
    # No message to the centre carries centroids, records or D² values in the clear.
    for m in centre.received:
        if isinstance(m, jm.Setup):
            assert m.dp_lower == () and m.init == "k-means++"
    assert not any(isinstance(o, KeyShare) for o in _objects(centre.inner))
    # The key holders do hold shares (the scan can find one).
    assert any(isinstance(o, KeyShare) for o in _objects(owners[0]))


def test_the_centre_module_cannot_import_secret_key_code() -> None:
    code = ("import sys, cipherseg.protocols.joint.centre; "
            "print('cipherseg.schemes.threshold_keys' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_what_the_manager_learns_is_the_documented_leakage() -> None:
    parts = blobs(3, 300, seed=9)
    result = run_joint_kmeans(parts, 4, decimals=DECIMALS, random_state=4)
    log = result.log
    assert len(log.d2_totals) == 4 and all(len(t) == 3 for t in log.d2_totals)
    assert len(log.sampled_owners) == 4 and len(log.aggregates) == result.n_iter
    # Aggregates are the pooled per-cluster sums and counts, nothing per owner.
    _sums, counts = log.aggregates[-1]
    assert counts.sum() == sum(p.shape[0] for p in parts)


# ---------------------------------------------------------------- refusals
def _session(n_owners: int = 2) -> tuple[JointManager, list[JointOwner], JointCentre]:
    parts = blobs(n_owners, 60, seed=1)
    manager = JointManager(list(range(1, n_owners + 1)), 3, 2, decimals=DECIMALS,
                           random_state=1)
    owners = [JointOwner(i + 1, X, random_state=i) for i, X in enumerate(parts)]
    return manager, owners, JointCentre()


def test_messages_from_another_session_or_sender_are_refused() -> None:
    manager, owners, centre = _session()
    setup = manager.start()[0][1]
    centre.handle("manager", setup)
    with pytest.raises(ProtocolError, match="only the manager"):
        JointCentre().handle("owner-1", setup)
    foreign = jm.Close(protocol_version=jm.VERSION, session_id="other", round=0)
    with pytest.raises(ProtocolError, match="session"):
        centre.handle("manager", foreign)
    out = owners[0].handle("manager", setup)
    share = out[0][1]
    with pytest.raises(ProtocolError, match="may not send the key share"):
        centre.handle("owner-2", share)
    centre.handle("owner-1", share)
    with pytest.raises(ProtocolError, match="duplicated key share"):
        centre.handle("owner-1", share)


def test_a_centre_that_alters_an_owners_key_share_is_caught() -> None:
    manager, owners, centre = _session()
    parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
    original = centre._key_share

    def tamper(sender: str, m: jm.PublicKeyShare) -> list[tuple[str, Message]]:
        out = original(sender, m)
        if out:  # swap owner-1's share for another key's share before relaying
            assert centre.session is not None
            scheme = centre.session.scheme
            assert isinstance(scheme, ThresholdAggregation)
            crs = scheme.crs
            fake = KeyShare.generate(crs.params, crs, party_id=1).public_share.to_bytes()
            shares = list(out[0][1].shares)
            shares[1] = fake
            relayed = dataclasses.replace(out[0][1], shares=tuple(shares))
            return [(dst, relayed) for dst, _ in out]
        return out

    centre._key_share = tamper  # type: ignore[method-assign]
    # The manager (first to get the relayed shares) finds party 1's share does not open its
    # commitment; owner 1 would find its own share changed.
    with pytest.raises(ProtocolError, match=r"party 1's (key share does not open|share unch)"):
        deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])


def test_the_centre_defers_messages_that_overtake_the_setup() -> None:
    """Transports do not order messages from different senders: the manager's key share
    reaching the centre before the manager's Setup is deferred (NotReady) and delivered once
    the session is set up, not refused."""
    manager, owners, centre = _session()
    first = manager.start()
    setup = next(m for dst, m in first if dst == jm.CENTRE and isinstance(m, jm.Setup))
    share = next(m for dst, m in first if isinstance(m, jm.KeyCommitment))
    with pytest.raises(NotReady):
        JointCentre().handle(jm.MANAGER, share)
    overtaken = [(dst, m) for dst, m in first if m is share]
    overtaken += [(dst, m) for dst, m in first if m is not share]
    parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
    deliver(parties, [(manager.name, dst, m) for dst, m in overtaken])
    assert manager.done and centre.closed and all(o.done for o in owners)
    assert centre.session_id == setup.session_id
    # A message for another session once one is set up is still refused.
    foreign = jm.Close(protocol_version=jm.VERSION, session_id="other", round=0)
    with pytest.raises(ProtocolError, match="session"):
        centre.handle(jm.MANAGER, foreign)


def test_duplicated_contributions_and_partials_are_refused() -> None:
    manager, owners, centre = _session()
    parties = {manager.name: manager, centre.name: centre, **{o.name: o for o in owners}}
    deliver(parties, [(manager.name, dst, m) for dst, m in manager.start()])
    assert manager.done
    contribution = jm.EncryptedVector(protocol_version=jm.VERSION, session_id=manager.session_id,
                                      round=99, purpose="stats", ciphertext=b"x")
    centre._pending[(99, "stats")][1] = object()
    with pytest.raises(ProtocolError, match="two contributions"):
        centre.handle("owner-1", contribution)
    with pytest.raises(ProtocolError, match="not a data owner"):
        centre.handle("owner-9", contribution)
    partial = jm.Partial(protocol_version=jm.VERSION, session_id=manager.session_id, round=0,
                         purpose="stats", party_id=2, partial=b"")
    with pytest.raises(ProtocolError, match="may not send party 2"):
        manager.handle("owner-1", partial)


def test_bad_configurations_are_refused() -> None:
    lo, hi = (0.0, 0.0, 0.0), (100.0, 100.0, 100.0)
    with pytest.raises(ParameterError, match="k-means\\+\\+ releases"):
        JointManager([1, 2], 3, 4, dp=DPConfig(1.0, 1e-6, 10, lo, hi), max_iter=10)
    with pytest.raises(ParameterError, match="max_parties"):
        run_joint_kmeans(blobs(7, 30), 2)
    with pytest.raises(ParameterError, match="distinct"):
        JointManager([1, 1], 3, 2)
    with pytest.raises(ParameterError, match="manager"):
        JointOwner(0, np.zeros((3, 3)))
    with pytest.raises(EncodingError, match="overflow the joint sums"):
        run_joint_kmeans([np.full((50, 2), 1e9), np.zeros((50, 2))], 2, decimals=3)


# ---------------------------------------------------------------- differential privacy
DP_BOUNDS = ((-10.0, -10.0, -10.0), (100.0, 100.0, 100.0))


def test_dp_noise_is_added_by_every_owner_with_the_calibrated_width() -> None:
    parts = blobs(3, 400, seed=12)
    dp = DPConfig(2.0, 1e-6, 6, *DP_BOUNDS)
    init = np.vstack(parts)[[0, 1, 2, 3]]
    noisy = run_joint_kmeans(parts, 4, init=init, max_iter=6, decimals=DECIMALS, dp=dp,
                             random_state=6)
    assert noisy.n_iter == 6 and noisy.dp_epsilon_spent is not None
    assert noisy.dp_epsilon_spent <= 2.0
    # Recompute the exact counts each iteration from the released centroids: the aggregate
    # counts differ by the sum of 3 owners' noise, std sqrt(3)·σ·√2.
    X = np.vstack(parts)
    clipped = FixedPointEncoder(decimals=DECIMALS).quantise(dp.clip(X)) + dp.middle
    diffs = []
    for released, (_, counts) in zip(noisy.log.released, noisy.log.aggregates, strict=False):
        exact = np.bincount(((clipped[:, None, :] - released[None]) ** 2).sum(2).argmin(1),
                            minlength=4)
        diffs.append(counts - exact)
    diffs_arr = np.concatenate(diffs).astype(float)
    expected = np.sqrt(3) * dp.count_noise_std
    assert np.any(diffs_arr != 0)
    assert 0.4 * expected < diffs_arr.std() < 1.8 * expected  # 23 dof: fails w.p. < 1e-5


def test_dp_utility_at_a_generous_budget() -> None:
    parts = blobs(3, 1500, seed=13)
    X = np.vstack(parts)
    noisy = JointKMeans(4, decimals=DECIMALS, mode="plain", max_iter=10, dp_epsilon=8.0,
                        dp_bounds=DP_BOUNDS, random_state=2).fit(parts)
    assert noisy.dp_epsilon_spent_ is not None and noisy.dp_epsilon_spent_ <= 8.0
    # The same data-independent start without noise (the bounds contain every record).
    exact = run_joint_kmeans(parts, 4, init=noisy.init_centers_, max_iter=10,
                             decimals=DECIMALS, mode="plain")
    assert adjusted_rand_score(np.concatenate(exact.labels), noisy.labels_) > 0.9
    assert noisy.predict(X).shape == (X.shape[0],)


def test_reconstruction_risk_without_dp_and_its_answer() -> None:
    """An owner subtracting its own contribution from each released aggregate learns the
    other owner's exact per-cluster sums every iteration (with 2 owners: its data's
    per-cluster totals); DP turns that into a noisy estimate."""
    parts = blobs(2, 500, seed=14)
    init = np.vstack(parts)[[0, 500, 2, 503]]
    enc = FixedPointEncoder(decimals=DECIMALS)

    def owner2_view(result_log: list, dp: DPConfig | None) -> list[float]:
        errors = []
        X1 = enc.encode(parts[0] if dp is None else dp.clip(parts[0]))
        X2 = enc.encode(parts[1] if dp is None else dp.clip(parts[1]))
        offset = 0 if dp is None else dp.middle
        for released, (sums, _) in zip(result_log.released, result_log.aggregates,
                                       strict=False):
            lab1 = ((enc.decode(X1)[:, None] - (released - offset)[None]) ** 2).sum(2).argmin(1)
            lab2 = ((enc.decode(X2)[:, None] - (released - offset)[None]) ** 2).sum(2).argmin(1)
            own = np.stack([X1[lab1 == j].sum(0) for j in range(4)])
            truth = np.stack([X2[lab2 == j].sum(0) for j in range(4)])
            errors.append(float(np.abs((sums - own) - truth).max()))
        return errors

    clear = run_joint_kmeans(parts, 4, init=init, max_iter=5, decimals=DECIMALS,
                             random_state=3, mode="plain")
    assert max(owner2_view(clear.log, None)) == 0.0  # exact reconstruction
    dp = DPConfig(1.0, 1e-6, 5, *DP_BOUNDS)
    private = run_joint_kmeans(parts, 4, init=init, max_iter=5, decimals=DECIMALS,
                               random_state=3, mode="plain", dp=dp)
    assert min(owner2_view(private.log, dp)) > 0.1 * dp.sum_noise_std * enc.scale


# ---------------------------------------------------------------- separate processes
@pytest.mark.slow
def test_parties_in_separate_processes_match_the_in_process_run() -> None:
    from cipherseg.bench.joint import owner_blob_features
    from cipherseg.hosting.joint_processes import run_joint_kmeans_processes

    # a fresh interpreter loads each owner's data: a function of the product, not of a test
    factory = functools.partial(owner_blob_features, customers=300, seed=21)
    seen: list[tuple[str, int, int]] = []
    procs = run_joint_kmeans_processes(factory, 2, 3, 3, decimals=DECIMALS, random_state=9,
                                       progress=lambda *state: seen.append(state))
    local = run_joint_kmeans([factory(1), factory(2)], 3, decimals=DECIMALS, random_state=9)
    np.testing.assert_array_equal(procs.centroids, local.centroids)
    np.testing.assert_array_equal(procs.init_centres, local.init_centres)
    assert procs.n_iter == local.n_iter
    for a, b in zip(procs.labels, local.labels, strict=True):
        np.testing.assert_array_equal(a, b)
    # the manager's log and every party's timings came back from the children
    assert procs.log.d2_totals == local.log.d2_totals
    assert procs.log.sampled_owners == local.log.sampled_owners
    for (s1, c1), (s2, c2) in zip(procs.log.aggregates, local.log.aggregates, strict=True):
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(c1, c2)
    assert len(procs.log.released) == len(local.log.released)
    assert set(procs.party_timings) == set(local.party_timings)
    assert procs.party_timings["owner-1"]["owner: local compute"] > 0
    sent = procs.traffic.sent
    assert sent["owner-1"]["iterations"] > 0 and sent["centre"]["iterations"] > 0
    assert sent == local.traffic.sent  # the same messages, byte for byte
    assert procs.stage_seconds["wall_total"] > 0 and "iterations" in procs.stage_seconds
    assert ("iterations", procs.n_iter, 100) in seen and seen[0][0] == "keygen"


# ---------------------------------------------------------------- demo and bench plumbing
@pytest.mark.slow
def test_demo_report_and_cli(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from cipherseg.bench.joint import (
        plot_dp_bench,
        plot_joint_bench,
        run_demo,
        run_dp_bench,
        run_joint_bench,
    )
    from cipherseg.cli import app

    out = Path(str(tmp_path))
    report = run_demo(owners=2, customers=300, k=3, data="blobs", processes=False, seed=1)
    assert report["ari_vs_sklearn_pooled"] >= 0.999 and report["max_centroid_error"] < 1e-9
    assert report["bytes_per_party_per_iteration"]["centre"] > 0
    json.dumps(report, default=float)
    result = CliRunner().invoke(app, ["joint-demo", "--owners", "2", "--customers-per-owner",
                                      "200", "--k", "2", "--data", "blobs", "--in-process",
                                      "--dp-epsilon", "5", "--json", str(out / "d.json")])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "d.json").read_text())
    assert saved["dp"]["epsilon"] == 5.0 and saved["dp_epsilon_spent"] <= 5.0
    bench = run_joint_bench(owners=2, customers=150, k=2, owner_counts=(2,), repeats=1,
                            data="blobs", primitive_repeats=1)
    assert bench["main"]["identical_results"] and bench["primitives"]["ciphertext_bytes"] > 0
    assert plot_joint_bench(bench, out / "j.png").stat().st_size > 0
    dp = run_dp_bench(epsilons=[1.0], owners=2, customers=150, k=2, seeds=[0], max_iter=3,
                      data="blobs")
    assert len(dp["rows"]) == 1 and plot_dp_bench(dp, out / "dp.png").stat().st_size > 0
