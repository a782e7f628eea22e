"""Where block work runs: a local process pool (default) or a Dask cluster.

See :mod:`cipherseg.engine.base` for the interface, :mod:`cipherseg.engine.local` and
:mod:`cipherseg.engine.dask` for the executors, :mod:`cipherseg.engine.factory` for choosing
them from ``--engine/--workers/--scheduler``.
"""

from cipherseg.engine.factory import ENGINES, PartyExecutors, make_executor, make_executors

__all__ = ["ENGINES", "PartyExecutors", "make_executor", "make_executors"]
