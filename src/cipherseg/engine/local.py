"""Local executor: in this process (``n_jobs`` None or 1) or a pool of forked processes.

Worker processes are forked after the state is registered, so they inherit contexts and
ciphertext blocks without copying them through pipes; only block indices go in and result
bytes come back. Registering new state retires the pool; the next ``map`` forks a fresh one.

>>> ex = LocalExecutor(n_jobs=1)
>>> ex.put_state("doc-local", lambda: 10)
>>> from cipherseg.engine.state import get_state
>>> get_state("doc-local")
10
>>> ex.close()
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from cipherseg.engine import state
from cipherseg.engine.base import BLOCKS_PER_TASK, stage_name, task_chunks
from cipherseg.errors import ParameterError
from cipherseg.progress import Progress

T = TypeVar("T")
R = TypeVar("R")


def resolve_n_jobs(n_jobs: int | None) -> int:
    """scikit-learn's convention: None → 1, -1 → all cores, -2 → all but one."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, int) or n_jobs == 0:
        raise ParameterError(f"n_jobs must be a non-zero integer or None, got {n_jobs!r}")
    cores = os.cpu_count() or 1
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


class LocalExecutor:
    """Process-pool executor on this machine.

    ``put_blocks`` keeps all blocks in this process (forked workers share them); ``map_blocks``
    splits them into chunks of at most ``blocks_per_task`` blocks, at least one per worker.
    """

    def __init__(self, n_jobs: int | None = None, *,
                 blocks_per_task: int = BLOCKS_PER_TASK) -> None:
        self._n = resolve_n_jobs(n_jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._keys: set[str] = set()
        self._n_blocks: dict[str, int] = {}
        self._per_task = blocks_per_task
        self._progress: Progress | None = None

    @property
    def n_workers(self) -> int:
        return self._n

    def put_state(self, key: str, builder: Callable[[], Any]) -> None:
        state.put_state(key, builder())
        self._keys.add(key)
        self._retire_pool()

    def drop_state(self, key: str) -> None:
        state.drop_state(key)
        self._keys.discard(key)
        self._n_blocks.pop(key, None)

    def put_blocks(self, key: str, build: Callable[[Any, dict[int, Any]], Any], common: Any,
                   blocks: Sequence[Any]) -> None:
        self.put_state(key, lambda: build(common, dict(enumerate(blocks))))
        self._n_blocks[key] = len(blocks)

    def set_progress(self, progress: Progress | None) -> None:
        self._progress = progress

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return self._run(fn, items, [1] * len(items))

    def map_blocks(self, key: str, fn: Callable[[T], R], make_args: Callable[[list[int]], T],
                   *, blocks: Sequence[int] | None = None,
                   blocks_per_task: int | None = None) -> list[R]:
        if key not in self._n_blocks:
            raise KeyError(f"no blocks registered under {key!r}; call put_blocks first")
        ids = range(self._n_blocks[key]) if blocks is None else sorted(blocks)
        chunks = task_chunks(ids, self._n, blocks_per_task or self._per_task)
        return self._run(fn, [make_args(c) for c in chunks], [len(c) for c in chunks])

    def worker_pids(self) -> list[int]:
        """Process ids of the current pool's workers (empty when work runs in this process)."""
        if self._pool is None:
            return []
        return sorted(p.pid for p in list(getattr(self._pool, "_processes", {}).values())
                      if p.pid is not None)

    def _run(self, fn: Callable[[T], R], items: Sequence[T], weights: list[int]) -> list[R]:
        stage, total, done = stage_name(fn), sum(weights), 0
        report = self._progress or (lambda stage, done, total: None)
        report(stage, 0, total)
        if self._n == 1 or len(items) <= 1:
            out = []
            for item, w in zip(items, weights, strict=True):
                out.append(fn(item))
                done += w
                report(stage, done, total)
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._n, mp_context=multiprocessing.get_context("fork")
            )
        futures = [self._pool.submit(fn, item) for item in items]
        weight = dict(zip(futures, weights, strict=True))
        for f in as_completed(futures):
            done += weight[f]
            report(stage, done, total)
        return [f.result() for f in futures]

    def _retire_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        self._retire_pool()
        for key in list(self._keys):
            self.drop_state(key)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
