"""Dask distributed executor: the same block functions on a cluster of worker processes.

Connects to a running scheduler (``DaskExecutor("tcp://host:8786")``) or starts a
:class:`~distributed.LocalCluster` of ``n_workers`` processes with one thread each (SEAL
holds the GIL, so processes, not threads, give parallelism).

How state moves:

* ``put_state(key, builder)`` registers a worker plugin: every worker — including one that
  joins or replaces a dead worker later — runs ``builder()`` once and keeps the result under
  ``key``. The builder must pickle (e.g. ``functools.partial(Context.from_bytes, data)``);
  contexts travel as bytes once per worker.
* ``put_blocks(key, build, common, blocks)`` *shards* the blocks: worker ``i`` builds and
  keeps only its contiguous share, as the result of a Dask task (a *shard*). Every later
  ``map_blocks`` task takes its shard as a dependency and is placed on the worker that holds
  it, so ciphertexts never move between protocol stages; only the stage's broadcast arguments
  go in and result bytes come back.
* Recovery: the shard task keeps its recipe (``build``, ``common``, the block payloads) in the
  scheduler's task graph. If a worker dies, Dask rebuilds its shard on another worker from the
  recipe and re-runs the lost block tasks there (up to ``distributed.scheduler.allowed-failures``
  times). Block functions are deterministic, so the result is unchanged. A shard that Dask
  must move or spill is pickled as its recipe, never as live ciphertext objects.

Only give this executor to a party whose state may live on the cluster: the compute centre
(public context, ciphertexts). The data owner's secret context cannot be pickled, and must
not be: its block work runs on the owner's own executor.

Examples
--------
>>> ex = DaskExecutor(n_workers=1)
>>> ex.map(abs, [-1, 2])
[1, 2]
>>> import operator
>>> from cipherseg.engine.state import get_state
>>> ex.put_blocks("doc", operator.or_, {}, [b"a", b"b", b"c"])   # shard = {} | {0: b"a", …}
>>> ex.map_blocks("doc", get_state, lambda chunk: "doc")        # where the shard lives
[{0: b'a', 1: b'b', 2: b'c'}]
>>> ex.close()
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cloudpickle
import dask
from dask.typing import Key
from distributed import Client, Future, LocalCluster, WorkerPlugin, as_completed

from cipherseg.engine import state
from cipherseg.engine.base import BLOCKS_PER_TASK, chunk_indices, stage_name, task_chunks
from cipherseg.engine.memory import peak_rss_bytes, reset_peak_rss
from cipherseg.errors import ParameterError
from cipherseg.progress import Progress

T = TypeVar("T")
R = TypeVar("R")

# Stage arguments at least this large are scattered straight to the worker holding the shard.
_SCATTER_BYTES = 1 << 20

# Each block task carries its stage's arguments (for the sums: the block's one-hot
# ciphertexts), and each shard task its recipe; both are meant to be in the graph.
_GRAPH_WARNING = {"distributed.admin.large-graph-warning-threshold": "4GB"}


def _payload_nbytes(obj: Any) -> int:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return len(obj)
    if isinstance(obj, Mapping):
        return sum(_payload_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_payload_nbytes(v) for v in obj)
    return 64


class _Shard:
    """One worker's share of a party's blocks: the built state and the recipe it came from."""

    __slots__ = ("build", "common", "nbytes", "payload", "value")

    def __init__(self, build: Callable[[Any, dict[int, Any]], Any], common: Any,
                 payload: dict[int, Any]) -> None:
        self.build = build
        self.common = common
        self.payload = payload
        self.value = build(common, payload)
        # Live SEAL ciphertexts take about 2.3x their seeded, compressed bytes; plus the recipe.
        self.nbytes = int(3.5 * _payload_nbytes(payload)) + _payload_nbytes(common)

    def __reduce__(self) -> tuple[Any, ...]:
        # Moving or spilling a shard ships its recipe, rebuilt on arrival.
        return (_Shard, (self.build, self.common, self.payload))

    def __sizeof__(self) -> int:
        return self.nbytes


def _run_on_shard(fn: Callable[[Any], Any], key: str, shard: _Shard, args: Any
                  ) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    with state.bound_state(key, shard.value):
        out = fn(args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


def _run(fn: Callable[[Any], Any], args: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(args)
    return time.perf_counter() - wall, time.process_time() - cpu, out


@dataclass
class StageStats:
    """Where a stage's time went: on the client (wall) and inside the block tasks."""

    calls: int = 0
    tasks: int = 0
    wall_seconds: float = 0.0
    task_seconds: float = 0.0
    task_cpu_seconds: float = 0.0
    resent: int = 0
    """Tasks sent again because their scattered arguments were lost with a worker."""

    def as_dict(self) -> dict[str, float]:
        return {"calls": self.calls, "tasks": self.tasks, "wall_seconds": self.wall_seconds,
                "task_seconds": self.task_seconds, "task_cpu_seconds": self.task_cpu_seconds,
                "resent": self.resent}


class _StatePlugin(WorkerPlugin):
    """Builds one piece of replicated state on every worker, present and future."""

    def __init__(self, key: str, builder: Callable[[], Any]) -> None:
        self.key = key
        self.builder = builder

    def setup(self, worker: Any) -> None:
        state.put_state(self.key, self.builder())

    def teardown(self, worker: Any) -> None:
        state.drop_state(self.key)


@dataclass
class _Blocks:
    shards: list[Future[Any]]
    ranges: list[list[int]]


def _worker_peak_rss() -> dict[str, int]:
    return {"peak_rss_bytes": peak_rss_bytes()}


class DaskExecutor:
    """Executor on a Dask distributed cluster (see the module documentation).

    Parameters
    ----------
    scheduler:
        Address of a running scheduler (``tcp://host:8786``); ``None`` starts a local cluster.
    n_workers:
        Worker processes of the local cluster (ignored with ``scheduler``).
    blocks_per_task:
        At most this many blocks per task: finer gives smoother progress, coarser less
        overhead (each task re-derives the stage's broadcast terms).
    timeout:
        Seconds to wait for at least one worker of a remote scheduler.
    """

    def __init__(self, scheduler: str | None = None, *, n_workers: int = 1,
                 blocks_per_task: int = BLOCKS_PER_TASK, timeout: float = 60.0) -> None:
        if blocks_per_task < 1:
            raise ParameterError(f"blocks_per_task must be >= 1, got {blocks_per_task}")
        self._cluster: LocalCluster | None = None
        if scheduler is None:
            if not isinstance(n_workers, int) or n_workers < 1:
                raise ParameterError(f"n_workers must be a positive integer, got {n_workers!r}")
            # Block tasks are pinned to their shard's worker; stealing them would move shards.
            with dask.config.set({"distributed.scheduler.work-stealing": False}), \
                    warnings.catch_warnings():
                # Its health/metrics HTTP server moves to a free port when 8787 is taken.
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                self._cluster = LocalCluster(
                    n_workers=n_workers, threads_per_worker=1, processes=True,
                    dashboard_address=None, silence_logs=logging.ERROR,
                )
            self._client = Client(self._cluster, direct_to_workers=True, set_as_default=False)
        else:
            try:
                self._client = Client(scheduler, direct_to_workers=True, set_as_default=False,
                                      timeout=timeout)
            except (OSError, TimeoutError) as exc:
                raise ParameterError(
                    f"cannot reach the Dask scheduler at {scheduler!r}: {exc}; start one with "
                    "`dask scheduler` and workers with `dask worker ADDRESS --nthreads 1`"
                ) from exc
            self._client.wait_for_workers(1, timeout=timeout)
        self._per_task = blocks_per_task
        self._plugins: dict[str, str] = {}
        self._blocks: dict[str, _Blocks] = {}
        self._progress: Progress | None = None
        self.stats: dict[str, StageStats] = {}
        """Per stage (block function): client wall time and time inside the tasks."""

    # --- cluster facts -----------------------------------------------------------------------
    @property
    def client(self) -> Client:
        """The Dask client (e.g. to run Dask DataFrame work on the same cluster)."""
        return self._client

    def _workers(self) -> dict[str, int]:
        info = self._client.scheduler_info(n_workers=-1)["workers"]
        return {addr: int(w.get("nthreads", 1)) for addr, w in sorted(info.items())}

    @property
    def n_workers(self) -> int:
        """Parallel slots: the total number of worker threads."""
        return max(1, sum(self._workers().values()))

    def worker_peak_rss(self) -> dict[str, int]:
        """Peak resident memory in bytes of every worker process, by worker address."""
        out = self._client.run(_worker_peak_rss)
        return {addr: int(v["peak_rss_bytes"]) for addr, v in sorted(out.items())}

    def reset_worker_peak_rss(self) -> None:
        """Start a new peak-memory measurement on every worker (Linux)."""
        self._client.run(reset_peak_rss)

    # --- state -------------------------------------------------------------------------------
    def put_state(self, key: str, builder: Callable[[], Any]) -> None:
        try:
            cloudpickle.dumps(builder)
        except Exception as exc:
            raise ParameterError(
                f"state {key!r} cannot be sent to Dask workers ({exc}); pass a builder that "
                "pickles, e.g. functools.partial(Context.from_bytes, data). A secret-key "
                "context never goes to a shared cluster: run the key holder's block work on "
                "its own executor"
            ) from exc
        name = f"cipherseg-state-{key}"
        self._client.register_plugin(_StatePlugin(key, builder), name=name)
        self._plugins[key] = name

    def put_blocks(self, key: str, build: Callable[[Any, dict[int, Any]], Any], common: Any,
                   blocks: Sequence[Any]) -> None:
        self.drop_state(key)
        workers = list(self._workers())
        ranges = chunk_indices(len(blocks), len(workers))
        shards = []
        with dask.config.set(_GRAPH_WARNING):
            for i, (addr, ids) in enumerate(zip(workers, ranges, strict=False)):
                payload = {b: blocks[b] for b in ids}
                shards.append(self._client.submit(
                    _Shard, build, common, payload, key=f"cipherseg-shard-{key}-{i}",
                    workers=[addr], allow_other_workers=True, pure=False,
                ))
        self._blocks[key] = _Blocks(shards, ranges)
        report = self._progress or (lambda stage, done, total: None)
        report("load", 0, len(blocks))
        done = 0
        # Wait without fetching: a shard never leaves its worker.
        for f in as_completed(shards, loop=self._client.loop):
            if f.status == "error":
                exc = f.exception()
                self.drop_state(key)
                raise exc  # the builder's own error, e.g. CiphertextError for bad bytes
            done += len(ranges[shards.index(f)])
            report("load", done, len(blocks))

    def drop_state(self, key: str) -> None:
        name = self._plugins.pop(key, None)
        if name is not None:
            self._client.unregister_worker_plugin(name)
        blocks = self._blocks.pop(key, None)
        if blocks is not None:
            self._client.cancel(blocks.shards)
            for f in blocks.shards:
                f.release()

    def set_progress(self, progress: Progress | None) -> None:
        self._progress = progress

    # --- work --------------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        started = time.perf_counter()
        with dask.config.set(_GRAPH_WARNING):
            futures = [self._client.submit(_run, fn, item, pure=False,
                                           key=f"{stage_name(fn)}-{uuid.uuid4().hex}")
                       for item in items]
        return self._collect(stage_name(fn), futures, [1] * len(items), started)

    def map_blocks(self, key: str, fn: Callable[[T], R], make_args: Callable[[list[int]], T],
                   *, blocks: Sequence[int] | None = None,
                   blocks_per_task: int | None = None) -> list[R]:
        held = self._blocks.get(key)
        if held is None:
            raise KeyError(f"no blocks registered under {key!r}; call put_blocks first")
        started = time.perf_counter()
        wanted = None if blocks is None else set(blocks)
        where = self._client.who_has(held.shards)
        nthreads = self._workers()
        stage = stage_name(fn)
        futures, weights = [], []
        retry: dict[Key, Callable[[], Future[Any]]] = {}
        with dask.config.set(_GRAPH_WARNING):
            for shard, ids in zip(held.shards, held.ranges, strict=True):
                mine = [b for b in ids if wanted is None or b in wanted]
                holders = list(where.get(shard.key, ()))
                slots = sum(nthreads.get(h, 1) for h in holders) or 1
                for chunk in task_chunks(mine, slots, blocks_per_task or self._per_task):
                    args = make_args(chunk)
                    submit = functools.partial(
                        self._client.submit, _run_on_shard, fn, key, shard, pure=False,
                        workers=holders or None, allow_other_workers=True)
                    if holders and _payload_nbytes(args) >= _SCATTER_BYTES:
                        # Straight to the shard's worker: through the task graph, bytes also
                        # cross the scheduler (measured 2-3x slower for the sums' one-hots).
                        (sent,) = self._client.scatter([args], workers=holders, direct=True,
                                                       hash=False)
                        future = submit(sent, key=f"{stage}-{uuid.uuid4().hex}")
                        # Scattered data has no recipe: if its worker dies, run the task
                        # again with the arguments in the graph, where Dask can recover it.
                        retry[future.key] = functools.partial(
                            submit, args, key=f"{stage}-{uuid.uuid4().hex}")
                    else:
                        future = submit(args, key=f"{stage}-{uuid.uuid4().hex}")
                    futures.append(future)
                    weights.append(len(chunk))
        return self._collect(stage, futures, weights, started, retry)

    def _collect(self, stage: str, futures: list[Future[Any]], weights: list[int],
                 started: float, retry: dict[Key, Callable[[], Future[Any]]] | None = None
                 ) -> list[Any]:
        report = self._progress or (lambda stage, done, total: None)
        retry = dict(retry or {})
        total, done = sum(weights), 0
        report(stage, 0, total)
        weight = {f.key: w for f, w in zip(futures, weights, strict=True)}
        slot = {f.key: i for i, f in enumerate(futures)}  # a retried task keeps its place
        results: dict[int, Any] = {}
        stats = self.stats.setdefault(stage, StageStats())
        live = list(futures)
        try:
            pending = as_completed(futures, loop=self._client.loop)
            for f in pending:
                if f.status != "finished" and f.key in retry:
                    again = retry.pop(f.key)()
                    stats.resent += 1
                    weight[again.key], slot[again.key] = weight[f.key], slot[f.key]
                    live.append(again)
                    pending.add(again)
                    continue
                wall, cpu, result = f.result()  # raises the task's own error
                results[slot[f.key]] = result
                stats.task_seconds += wall
                stats.task_cpu_seconds += cpu
                done += weight[f.key]
                report(stage, done, total)
        finally:
            for f in live:
                f.release()
        stats.calls += 1
        stats.tasks += len(futures)
        stats.wall_seconds += time.perf_counter() - started
        return [results[i] for i in range(len(futures))]

    def close(self) -> None:
        for key in list(self._plugins) + list(self._blocks):
            # Closing must not fail because the cluster is already gone.
            with contextlib.suppress(Exception):
                self.drop_state(key)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

