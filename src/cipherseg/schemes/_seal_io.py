"""Bytes in and out of SEAL objects.

TenSEAL's ``sealapi`` saves and loads SEAL objects only through file paths, so we go through
one private scratch file per process in RAM-backed storage when it exists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from typing import Any, Protocol

_local = threading.local()


class _Saveable(Protocol):
    def save(self, path: str) -> None: ...


def _scratch_path() -> str:
    path: str | None = getattr(_local, "path", None)
    if path is None or getattr(_local, "pid", None) != os.getpid():
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix="cipherseg-", suffix=".seal", dir=base)
        os.close(fd)
        os.chmod(path, 0o600)
        _local.path = path
        _local.pid = os.getpid()
        import atexit

        atexit.register(_remove, path)
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def seal_to_bytes(obj: _Saveable) -> bytes:
    """Serialise any SEAL object (or ``Serializable`` wrapper) to bytes."""
    path = _scratch_path()
    obj.save(path)
    with open(path, "rb") as fh:
        return fh.read()


def seal_from_bytes(obj: Any, context: Any, data: bytes) -> Any:
    """Load ``data`` into the empty SEAL object ``obj`` under ``context``; return ``obj``.

    SEAL validates the header, sizes and that the object belongs to the parameters; it raises
    on failure (callers translate that into a :class:`~cipherseg.errors.CiphertextError`).
    """
    path = _scratch_path()
    with open(path, "wb") as fh:
        fh.write(data)
    obj.load(context, path)
    return obj
