"""The Dask executor: same answers as the local executor, shards stay put, dead workers recover.

One LocalCluster of 2 worker processes serves the whole module (starting one costs ~1 s).
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from cipherseg.engine import dask as dask_module
from cipherseg.engine.dask import DaskExecutor
from cipherseg.engine.local import LocalExecutor
from cipherseg.engine.state import get_state, has_state
from cipherseg.errors import CiphertextError, ParameterError
from cipherseg.protocols.outsourced import messages as p
from cipherseg.protocols.outsourced.centre import ComputeCentre
from cipherseg.protocols.outsourced.owner import DataOwner, KMeansRun
from cipherseg.protocols.party import PartyLink
from cipherseg.schemes.ckks import CkksParams
from cipherseg.schemes.ckks_keys import CkksSecretContext

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dask_ex() -> Any:
    ex = DaskExecutor(n_workers=2, blocks_per_task=2)
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    # Five blocks of 4096 (the last one partial), three features, four separated groups.
    rng = np.random.default_rng(7)
    centres = np.array([[-0.6, -0.5, 0.2], [0.5, 0.6, -0.4], [0.5, -0.5, 0.5], [-0.4, 0.5, -0.6]])
    labels = rng.integers(0, 4, 18_000)
    return np.clip(centres[labels] + rng.normal(0, 0.15, (18_000, 3)), -1, 1)


def _run(X: np.ndarray, executor: Any, progress: Any = None) -> KMeansRun:
    centre = ComputeCentre(executor=executor, random_state=3)
    owner = DataOwner(random_state=4)
    if progress is not None:
        executor.set_progress(progress)
    try:
        return owner.run_kmeans(X, 4, PartyLink(centre, sender="owner"), max_iter=4,
                                tol=0.0)
    finally:
        executor.set_progress(None)


@pytest.fixture(scope="module")
def local_run(X: np.ndarray) -> KMeansRun:
    return _run(X, LocalExecutor(1))


def _assert_same(a: KMeansRun, b: KMeansRun) -> None:
    # Same seeds → same initial picks and labels; CKKS encryption noise is fresh each run, so
    # centroids agree to the scheme's precision, not bit for bit.
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.init_centers, b.init_centers, atol=1e-7)
    np.testing.assert_allclose(a.centers, b.centers, atol=1e-7)
    assert a.n_iter == b.n_iter


def test_dask_gives_the_local_executors_labels_and_centroids(
        dask_ex: DaskExecutor, X: np.ndarray, local_run: KMeansRun) -> None:
    seen: dict[str, int] = {}
    run = _run(X, dask_ex, lambda stage, done, total: seen.__setitem__(stage, total))
    _assert_same(run, local_run)
    assert run.n_blocks == 5 and seen["scores"] == 5 and seen["sums"] == 5
    assert dask_ex.stats["scores"].tasks >= 3 * dask_ex.stats["scores"].calls  # 2-block tasks
    assert dask_ex.stats["sums"].task_cpu_seconds > 0
    # Plaintext reference: scikit-learn's Lloyd from the same initial centres.
    ref = KMeans(4, init=run.init_centers, n_init=1, max_iter=4, tol=0.0,
                 algorithm="lloyd").fit(X)
    assert adjusted_rand_score(ref.labels_, run.labels) == 1.0
    np.testing.assert_allclose(run.centers, ref.cluster_centers_, atol=1e-6)


def _worker_helpers() -> dict[str, Any]:
    """Functions for the workers. Defined locally so that they travel by value: the workers
    cannot import this test module."""

    def pid_shard(common: Any, share: dict[int, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), "blocks": sorted(share), "common": common}

    def where(args: tuple[str, list[int]]) -> tuple[int, int, list[int], list[int]]:
        key, chunk = args
        shard = get_state(key)
        return os.getpid(), shard["pid"], shard["blocks"], chunk

    def read_state(key: str) -> Any:
        return get_state(key)

    def has(key: str) -> bool:
        return has_state(key)

    def secret_objects() -> int:
        import tenseal.sealapi as seal

        return sum(isinstance(o, (seal.SecretKey, seal.Decryptor)) for o in gc.get_objects())

    return {"pid_shard": pid_shard, "where": where, "read_state": read_state, "has": has,
            "secret_objects": secret_objects}


W = _worker_helpers()


def test_block_tasks_run_where_their_shard_lives(dask_ex: DaskExecutor) -> None:
    dask_ex.put_blocks("where", W["pid_shard"], "ctx", [b"x"] * 7)
    try:
        out = dask_ex.map_blocks("where", W["where"], lambda c: ("where", c))
        assert [b for *_, chunk in out for b in chunk] == list(range(7))
        for pid, shard_pid, shard_blocks, chunk in out:
            assert pid == shard_pid and set(chunk) <= set(shard_blocks)
        assert len({shard_pid for _, shard_pid, _, _ in out}) == 2  # one shard per worker
        (only,) = dask_ex.map_blocks("where", W["where"], lambda c: ("where", c), blocks=[5])
        assert only[3] == [5] and 5 in only[2]
    finally:
        dask_ex.drop_state("where")
    with pytest.raises(KeyError, match="put_blocks"):
        dask_ex.map_blocks("where", W["where"], lambda c: ("where", c))


def test_replicated_state_reaches_every_worker_once(dask_ex: DaskExecutor) -> None:
    dask_ex.put_state("pid", os.getpid)  # built on each worker: the worker's own pid
    try:
        pids = dask_ex.client.run(W["read_state"], "pid")
        assert len(set(pids.values())) == 2
        assert set(dask_ex.map(W["read_state"], ["pid"] * 6)) <= set(pids.values())
    finally:
        dask_ex.drop_state("pid")
    assert dask_ex.client.run(W["has"], "pid") == {a: False for a in pids}


def test_state_that_cannot_leave_the_process_is_refused(dask_ex: DaskExecutor) -> None:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    with pytest.raises(ParameterError, match="secret-key context never goes"):
        dask_ex.put_state("secret", lambda: owner)


def test_bad_ciphertext_bytes_fail_the_upload_with_ciphertext_error(
        dask_ex: DaskExecutor) -> None:
    owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    good = owner.encrypt_to_bytes(np.zeros(10))
    bad = good[:-50] + bytes(50)
    upload = p.Upload(protocol_version=1, session_id="s", round=1,
                      public_context=owner.public_bytes(), n_samples=4106, n_features=1,
                      n_clusters=2, block_sizes=(4096, 10), features=(good, bad))
    with pytest.raises(CiphertextError, match="checksum"):
        ComputeCentre(executor=dask_ex).handle("owner", upload)


@pytest.mark.parametrize("scatter", [False, True], ids=["args-in-graph", "args-scattered"])
def test_a_worker_killed_mid_run_is_replaced_and_the_result_is_unchanged(
        dask_ex: DaskExecutor, X: np.ndarray, local_run: KMeansRun, scatter: bool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Scattered stage arguments (the sums' one-hots) are lost with their worker and must be
    # sent again; arguments in the task graph are recovered by Dask itself.
    monkeypatch.setattr(dask_module, "_SCATTER_BYTES", 0 if scatter else 2**62)
    dask_ex.client.wait_for_workers(2, timeout=60)
    pids = dask_ex.client.run(os.getpid)
    victim = max(pids.values())
    killed: list[int] = []
    stages: list[tuple[str, int, int]] = []

    def kill_in_second_sums_stage(stage: str, done: int, total: int) -> None:
        stages.append((stage, done, total))
        sums_started = sum(1 for s, d, _ in stages if s == "sums" and d == 0)
        if stage == "sums" and done == 0 and sums_started == 2 and not killed:
            os.kill(victim, signal.SIGKILL)  # tasks of this stage are queued or running on it
            killed.append(victim)

    resent_before = dask_ex.stats["sums"].resent if "sums" in dask_ex.stats else 0
    run = _run(X, dask_ex, kill_in_second_sums_stage)
    assert killed
    assert (dask_ex.stats["sums"].resent > resent_before) == scatter
    _assert_same(run, local_run)
    dask_ex.client.wait_for_workers(2, timeout=60)
    new_pids = dask_ex.client.run(os.getpid)
    assert victim not in new_pids.values()
    # Every stage after the kill still accounted for every block.
    assert all(done == total for (s, done, total), nxt in itertools.pairwise(stages)
               if nxt[0] != s)
    # The centre's workers never held the owner's secret key.
    assert set(dask_ex.client.run(W["secret_objects"]).values()) == {0}


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="cannot reach the Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout=2)
