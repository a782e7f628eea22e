"""Per-process state that block functions look up by key.

A party registers long-lived objects (its context, its ciphertext blocks) under a key; block
functions executed by an executor — in this process or in forked worker processes — fetch them
with :func:`get_state`. Only keys and bytes cross process boundaries.

An executor that holds a party's blocks as shards (:mod:`cipherseg.engine.dask`) binds the
shard a task runs on with :func:`bound_state`: the binding is visible to the current thread
only, so two threads of one worker can run on two shards of the same session.

>>> put_state("doc-example", 42)
>>> get_state("doc-example")
42
>>> with bound_state("doc-example", 7):
...     get_state("doc-example")
7
>>> drop_state("doc-example")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_STATE: dict[str, Any] = {}
_BOUND = threading.local()


def put_state(key: str, value: Any) -> None:
    _STATE[key] = value


def get_state(key: str) -> Any:
    bound: dict[str, Any] | None = getattr(_BOUND, "values", None)
    if bound is not None and key in bound:
        return bound[key]
    try:
        return _STATE[key]
    except KeyError:
        raise KeyError(
            f"no worker state {key!r} in this process; the executor was not prepared for it"
        ) from None


def has_state(key: str) -> bool:
    """Whether ``key`` is registered in this process (or bound in this thread)."""
    bound: dict[str, Any] | None = getattr(_BOUND, "values", None)
    return (bound is not None and key in bound) or key in _STATE


def drop_state(key: str) -> None:
    _STATE.pop(key, None)


@contextmanager
def bound_state(key: str, value: Any) -> Iterator[None]:
    """Make ``get_state(key)`` return ``value`` in this thread for the duration of the block."""
    bound: dict[str, Any] | None = getattr(_BOUND, "values", None)
    if bound is None:
        bound = _BOUND.values = {}
    missing = object()
    previous = bound.get(key, missing)
    bound[key] = value
    try:
        yield
    finally:
        if previous is missing:
            del bound[key]
        else:
            bound[key] = previous
