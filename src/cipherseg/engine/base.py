"""The executor interface every protocol uses for block work.

Block work is a pure function of (worker state, a chunk of block indices, broadcast
arguments) returning bytes or small numpy arrays; an executor decides where it runs.

Two kinds of state:

* ``put_state(key, builder)``: the same object everywhere block functions run (a context).
* ``put_blocks(key, build, common, blocks)``: a party's blocks (its ciphertexts), which an
  executor may *shard*: each place where work runs holds ``build(common, {i: blocks[i]})`` for
  its share of block indices only, and ``map_blocks`` runs every chunk of blocks where its
  shard lives, so ciphertexts stay put between protocol stages. ``build`` and the payloads
  must pickle for executors that run on other machines (module-level function, bytes).

>>> from cipherseg.engine.local import LocalExecutor
>>> ex = LocalExecutor(n_jobs=1)
>>> ex.map(abs, [-1, 2, -3])
[1, 2, 3]
>>> ex.close()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from cipherseg.progress import Progress

T = TypeVar("T")
R = TypeVar("R")


BLOCKS_PER_TASK = 32
"""Default number of blocks per task in ``map_blocks``: progress granularity vs overhead."""

ONE_TASK_PER_WORKER = 2**62
"""``blocks_per_task`` for ``map_blocks`` calls that want one task per worker slot."""


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

    def put_blocks(self, key: str, build: Callable[[Any, dict[int, Any]], Any], common: Any,
                   blocks: Sequence[Any]) -> None:
        """Hold ``len(blocks)`` blocks under ``key``; block functions see ``build(common, share)``
        as ``get_state(key)``, where ``share`` maps global block indices to payloads."""
        ...

    def map_blocks(self, key: str, fn: Callable[[T], R], make_args: Callable[[list[int]], T],
                   *, blocks: Sequence[int] | None = None,
                   blocks_per_task: int | None = None) -> list[R]:
        """``fn(make_args(chunk))`` for contiguous chunks of the blocks under ``key`` (all, or
        only ``blocks``), each run where its blocks are held; results in ascending block order,
        so concatenating per-block results gives block order. ``blocks_per_task`` overrides
        the executor's chunk size for this call (:data:`ONE_TASK_PER_WORKER` for stages whose
        results are partial aggregates: fewer partials to combine)."""
        ...

    def set_progress(self, progress: Progress | None) -> None:
        """Report finished blocks per stage (stage = the block function's name)."""
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


def task_chunks(ids: Sequence[int], n_workers: int, per_task: int = BLOCKS_PER_TASK
                ) -> list[list[int]]:
    """Contiguous chunks of ``ids``: at least one per worker, at most ``per_task`` ids each.

    >>> task_chunks(list(range(5)), 2, per_task=2)
    [[0, 1], [2, 3], [4]]
    >>> task_chunks([7, 8, 9], 4)
    [[7], [8], [9]]
    """
    ids = list(ids)
    if not ids:
        return []
    parts = max(n_workers, -(-len(ids) // max(1, per_task)))
    return [[ids[i] for i in c] for c in chunk_indices(len(ids), parts)]


def stage_name(fn: Callable[..., Any]) -> str:
    """The progress stage of a block function: its name without ``_task``.

    >>> def scores_task(args): ...
    >>> stage_name(scores_task)
    'scores'
    """
    name = getattr(fn, "__name__", type(fn).__name__)
    return name.removesuffix("_task")
