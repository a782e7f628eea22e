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
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from cipherseg.engine import state
from cipherseg.errors import ParameterError

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
    """Process-pool executor on this machine."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self._n = resolve_n_jobs(n_jobs)
        self._pool: ProcessPoolExecutor | None = None
        self._keys: set[str] = set()

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

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if self._n == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._n, mp_context=multiprocessing.get_context("fork")
            )
        return list(self._pool.map(fn, items))

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
