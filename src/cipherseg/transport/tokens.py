"""Access-token files shared between a compute centre service and its data owners.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "centre.token"
>>> token = ensure_token_file(path)
>>> read_token_file(path) == token, oct(path.stat().st_mode & 0o777)
(True, '0o600')
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cipherseg.errors import ParameterError


def read_token_file(path: Path) -> str:
    """The access token in ``path`` (one line), or a clear error."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ParameterError(f"cannot read the access token file {path}: {exc.strerror}") from exc
    if len(token) < 16:
        raise ParameterError(f"the access token in {path} is shorter than 16 characters; "
                             "delete the file to have `cipherseg centre serve` make a new one")
    return token


def ensure_token_file(path: Path) -> str:
    """Read the token in ``path``, or write a fresh random one there (mode 0600)."""
    if path.exists():
        return read_token_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    return token
