"""Choose executors from command-line style options (``--engine``, ``--workers``, ``--scheduler``).

Each party gets its own executor: the compute centre's may be a Dask cluster (it holds only
public keys and ciphertexts); the data owner's block work (decrypt, argmin, encrypt) always
runs in the owner's own processes, so its secret key never reaches the centre's workers.

>>> pair = make_executors("local", workers=1)
>>> (pair.owner.n_workers, pair.centre.n_workers)
(1, 1)
>>> pair.close()
"""

from __future__ import annotations

from dataclasses import dataclass

from cipherseg.engine.base import Executor
from cipherseg.engine.local import LocalExecutor
from cipherseg.errors import ParameterError

ENGINES = ("local", "dask")


def make_executor(engine: str = "local", workers: int | None = None,
                  scheduler: str | None = None) -> Executor:
    """One executor: a local process pool, a local Dask cluster, or a remote Dask scheduler.

    ``workers`` is the number of processes (local pool or local Dask cluster; default 1);
    ``scheduler`` (``tcp://host:8786``) selects a running Dask cluster, whose size is its own.

    >>> ex = make_executor("local", workers=2)
    >>> ex.n_workers
    2
    >>> ex.close()
    >>> make_executor("spark")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ParameterError: unknown engine 'spark'; choose one of local, dask
    """
    if engine not in ENGINES:
        raise ParameterError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ParameterError(f"workers must be a positive integer, got {workers!r}")
    if engine == "local":
        if scheduler is not None:
            raise ParameterError("--scheduler needs --engine dask")
        return LocalExecutor(workers)
    if scheduler is not None and workers is not None:
        raise ParameterError(
            "--workers sizes a local Dask cluster; with --scheduler the cluster has the workers "
            "started for it (`dask worker ADDRESS --nthreads 1`): drop --workers"
        )
    from cipherseg.engine.dask import DaskExecutor

    return DaskExecutor(scheduler, n_workers=workers or 1)


@dataclass
class PartyExecutors:
    """The data owner's and the compute centre's executors (close both when done)."""

    owner: Executor
    centre: Executor

    def close(self) -> None:
        try:
            self.centre.close()
        finally:
            if self.owner is not self.centre:
                self.owner.close()


def make_executors(engine: str = "local", workers: int | None = None,
                   scheduler: str | None = None) -> PartyExecutors:
    """The centre's executor from the options; the owner's: a local pool of ``workers``
    processes (default 1), standing for the owner's own machine."""
    centre = make_executor(engine, workers, scheduler)
    return PartyExecutors(owner=LocalExecutor(workers), centre=centre)
