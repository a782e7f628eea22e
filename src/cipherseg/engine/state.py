"""Per-process state that block functions look up by key.

A party registers long-lived objects (its context, its ciphertext blocks) under a key; block
functions executed by an executor — in this process or in forked worker processes — fetch them
with :func:`get_state`. Only keys and bytes cross process boundaries.

>>> put_state("doc-example", 42)
>>> get_state("doc-example")
42
>>> drop_state("doc-example")
"""

from __future__ import annotations

from typing import Any

_STATE: dict[str, Any] = {}


def put_state(key: str, value: Any) -> None:
    _STATE[key] = value


def get_state(key: str) -> Any:
    try:
        return _STATE[key]
    except KeyError:
        raise KeyError(
            f"no worker state {key!r} in this process; the executor was not prepared for it"
        ) from None


def drop_state(key: str) -> None:
    _STATE.pop(key, None)
