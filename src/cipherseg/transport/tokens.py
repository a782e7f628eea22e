"""Access tokens of a compute centre service: one shared token, or one token per data owner.

A **token file** holds one token (``cipherseg centre serve --token-file``): every owner who
has it is the same client to the service. An **owners file** (``--owners-file``) names each
owner and holds the SHA-256 of its token, never the token itself; ``cipherseg centre
add-owner`` writes the owner's token to a file of its own to hand over, ``remove-owner``
revokes it, and the service sees either change at its next request. With an owners file, a
session belongs to the owner that opened it (:mod:`cipherseg.transport.http_server`).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "centre.token"
>>> token = ensure_token_file(path)
>>> read_token_file(path) == token, oct(path.stat().st_mode & 0o777)
(True, '0o600')
>>> owners = path.with_name("owners")
>>> mall = add_owner(owners, "north-mall")
>>> registry = OwnersFile(owners)
>>> registry.owner_of(mall), registry.owner_of("not-a-token"), mall in owners.read_text()
('north-mall', None, False)
>>> remove_owner(owners, "north-mall"); registry.owner_of(mall) is None
True
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cipherseg.errors import ParameterError

OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEADER = ("# cipherseg compute centre owners: <name> <sha256 of the owner's token>\n"
           "# Managed with `cipherseg centre add-owner` / `remove-owner`; tokens are not kept.\n")


def new_token() -> str:
    """A fresh access token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What an owners file keeps of a token (tokens are random: no salt or stretching needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def write_new_private_file(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600, refusing an existing file or a symlink) holding ``text``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _replace_private(path: Path, text: str) -> None:
    """Replace ``path`` by a file (mode 0600) holding ``text``, atomically and durably: a
    reader sees the old file or the new one, never a part, and a crash keeps one of them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of ``path`` between processes (``path.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    token = new_token()
    write_new_private_file(path, token + "\n")
    return token


class Authenticator(Protocol):
    """Who presents a token: the owner's name, or None for an unknown token."""

    def owner_of(self, token: str) -> str | None: ...


class SharedToken:
    """One token for every owner (``--token-file``): they are all the owner ``name``."""

    def __init__(self, token: str, name: str = "owner") -> None:
        self._digest = token_digest(token)
        self.name = name

    def owner_of(self, token: str) -> str | None:
        return self.name if hmac.compare_digest(token_digest(token), self._digest) else None


def read_owners_file(path: Path) -> dict[str, str]:
    """``{name: token digest}`` from an owners file, or a clear error naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParameterError(f"cannot read the owners file {path}: {exc.strerror}") from exc
    owners: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if (len(parts) != 2 or not OWNER_NAME.fullmatch(parts[0])
                or not re.fullmatch(r"[0-9a-f]{64}", parts[1])):
            raise ParameterError(f"{path}, line {number}: expected '<owner name> <sha256 hex>'; "
                                 "manage the file with `cipherseg centre add-owner`")
        if parts[0] in owners:
            raise ParameterError(f"{path}, line {number}: owner {parts[0]!r} appears twice")
        owners[parts[0]] = parts[1]
    return owners


def _write_owners_file(path: Path, owners: dict[str, str]) -> None:
    _replace_private(path, _HEADER + "".join(f"{n} {d}\n" for n, d in owners.items()))


def add_owner(path: Path, name: str) -> str:
    """Give owner ``name`` a fresh token in the owners file ``path`` (created, mode 0600, if
    missing); returns the token, which the file does not keep."""
    if not OWNER_NAME.fullmatch(name):
        raise ParameterError(f"owner name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit")
    with _locked(path):
        owners = read_owners_file(path) if path.exists() else {}
        if name in owners:
            raise ParameterError(f"owner {name!r} is already in {path}; `cipherseg centre "
                                 "remove-owner` it first to issue a new token")
        token = new_token()
        owners[name] = token_digest(token)
        _write_owners_file(path, owners)
    return token


def remove_owner(path: Path, name: str) -> None:
    """Revoke owner ``name``'s token (the service refuses it from its next request on)."""
    with _locked(path):
        owners = read_owners_file(path)
        if name not in owners:
            raise ParameterError(f"no owner {name!r} in {path} (owners: "
                                 f"{', '.join(owners) or 'none'})")
        del owners[name]
        _write_owners_file(path, owners)


class OwnersFile:
    """The owners of an owners file, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._by_digest: dict[str, str] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ParameterError(f"cannot read the owners file {self.path}: "
                                 f"{exc.strerror}") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            owners = read_owners_file(self.path)
            self._by_digest = {digest: name for name, digest in owners.items()}
            self._stamp = stamp

    def names(self) -> list[str]:
        self._reload()
        return sorted(self._by_digest.values())

    def owner_of(self, token: str) -> str | None:
        self._reload()
        return self._by_digest.get(token_digest(token))
