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
from cipherseg.engine.local import LocalExecutor, resolve_n_jobs
from cipherseg.errors import ParameterError

ENGINES = ("local", "dask")


def check_engine_options(engine: str, scheduler: str | None) -> None:
    """Refuse an unknown engine, or a scheduler without the Dask engine (before anything
    starts: a service checks its options before it starts the process that uses them)."""
    if engine not in ENGINES:
        raise ParameterError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "local" and scheduler is not None:
        raise ParameterError("--scheduler needs --engine dask")


def make_executor(engine: str = "local", workers: int | None = None,
                  scheduler: str | None = None) -> Executor:
    """One executor: a local process pool, a local Dask cluster, or a remote Dask scheduler.

    ``workers`` is the number of processes of the local pool or local Dask cluster, with
    scikit-learn's ``n_jobs`` convention (None: 1, -1: all cores); ``scheduler``
    (``tcp://host:8786``) selects a running Dask cluster instead, whose size is its own.

    >>> ex = make_executor("local", workers=2)
    >>> ex.n_workers
    2
    >>> ex.close()
    >>> make_executor("spark")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ParameterError: unknown engine 'spark'; choose one of local, dask
    """
    check_engine_options(engine, scheduler)
    n = resolve_n_jobs(workers)
    if engine == "local":
        return LocalExecutor(n)
    from cipherseg.engine.dask import DaskExecutor

    # With a scheduler the cluster has the workers started for it; ``workers`` is unused.
    return DaskExecutor(scheduler, n_workers=n)


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
    processes (default 1), standing for the owner's own machine (also with ``scheduler``)."""
    centre = make_executor(engine, workers, scheduler)
    return PartyExecutors(owner=LocalExecutor(resolve_n_jobs(workers)), centre=centre)
