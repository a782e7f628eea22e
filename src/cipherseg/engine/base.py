"""The executor interface every protocol uses for block work.

Block work is a pure function of (worker state, a chunk of block indices, broadcast
arguments) returning bytes or small numpy arrays; an executor decides where it runs.

>>> from cipherseg.engine.local import LocalExecutor
>>> ex = LocalExecutor(n_jobs=1)
>>> ex.map(abs, [-1, 2, -3])
[1, 2, 3]
>>> ex.close()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs block functions, possibly on other processes or machines."""

    @property
    def n_workers(self) -> int: ...

    def put_state(self, key: str, builder: Callable[[], Any]) -> None:
        """Make ``builder()`` available as ``get_state(key)`` wherever block functions run."""
        ...

    def drop_state(self, key: str) -> None: ...

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(item) for item in items]``, in order, run wherever the executor runs work."""
        ...

    def close(self) -> None: ...


def chunk_indices(n: int, parts: int) -> list[list[int]]:
    """Split ``range(n)`` into at most ``parts`` contiguous, non-empty, balanced chunks.

    >>> chunk_indices(5, 2)
    [[0, 1, 2], [3, 4]]
    """
    parts = max(1, min(parts, n))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for p in range(parts):
        stop = start + size + (1 if p < extra else 0)
        out.append(list(range(start, stop)))
        start = stop
    return [c for c in out if c]
