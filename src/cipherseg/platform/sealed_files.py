"""Files of an owner's data at rest: pending uploads and the importer's validated rows.

A sealed file is chunked AES-256-GCM under a fresh per-file key; that key is wrapped by the
platform's PII data key (:class:`~cipherseg.pii.vault.PiiVault`, the vault and rotation that
protect phone numbers and purchases), with the owner account and the file's random name as the
wrapped key's context. Layout::

    b"CSGSEAL1" | u16 len(wrapped key) | wrapped key | chunks...
    chunk = u32 len(body) | nonce(12) | body (AES-GCM of <= 1 MiB, tag included)

Each chunk's associated data is the owner, the file name, the chunk's index and whether it is
the last chunk; the writer always ends with a last chunk (empty if need be). So a reader
detects a changed byte, a chunk dropped, repeated or moved, a file cut at a chunk boundary,
and a file renamed or moved to another owner: :class:`SealedFileError` says so.

>>> import tempfile
>>> from pathlib import Path
>>> from cipherseg.pii.keys import PiiKeyring
>>> from cipherseg.pii.vault import PiiVault
>>> vault = PiiVault(PiiKeyring.generate())
>>> path = Path(tempfile.mkdtemp()) / "f.csv"
>>> with SealedWriter(path, vault, 7) as out:
...     _ = out.write(b"phone\\n13812345678\\n")
>>> b"1381234" in path.read_bytes()
False
>>> with open_sealed(path, vault, 7) as fh:
...     fh.read()
b'phone\\n13812345678\\n'
>>> open_sealed(path, vault, 8).read()
Traceback (most recent call last):
...
cipherseg.platform.sealed_files.SealedFileError: the stored file ... of another owner...
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherseg.errors import CiphertextError, KeyCustodyError
from cipherseg.pii.vault import PiiVault

MAGIC = b"CSGSEAL1"
CHUNK = 1 << 20
_NONCE = 12
_TAG = 16
_KEY_FIELD = "sealed-file-key"


class SealedFileError(CiphertextError):
    """A sealed file is not readable: changed, truncated, renamed or of another owner."""


def _broken(path: Path, what: str) -> SealedFileError:
    return SealedFileError(f"the stored file {path.name} {what}: it was changed or truncated on "
                           "disk, or is the file of another owner or upload; nothing is read "
                           "from it. Upload the original file again")


def _context(owner_id: int, path: Path) -> str:
    return f"{owner_id}/{path.name}"


def _aad(owner_id: int, path: Path, index: int, last: bool) -> bytes:
    return (f"cipherseg-sealed-file/v1/{_context(owner_id, path)}".encode()
            + struct.pack(">QB", index, 1 if last else 0))


class SealedWriter:
    """Writes a new sealed file (mode 0600, refused if it exists); ``close`` seals the end.

    Without ``close`` (an exception in the ``with`` block) the file is deleted.
    """

    def __init__(self, path: Path, vault: PiiVault, owner_id: int) -> None:
        self.path, self.owner_id = path, owner_id
        key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(key)
        wrapped = vault.encrypt(_KEY_FIELD, key.hex(), context=_context(owner_id, path))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._out: BinaryIO | None = os.fdopen(fd, "wb")
        self._out.write(MAGIC + struct.pack(">H", len(wrapped)) + wrapped)
        self._buf = bytearray()
        self._index = 0

    def _seal(self, data: bytes, last: bool) -> None:
        assert self._out is not None
        nonce = os.urandom(_NONCE)
        body = self._aead.encrypt(nonce, data,
                                  _aad(self.owner_id, self.path, self._index, last))
        self._out.write(struct.pack(">I", len(body)) + nonce + body)
        self._index += 1

    def write(self, data: bytes) -> int:
        if self._out is None:
            raise ValueError("the sealed file is closed")
        self._buf += data
        while len(self._buf) > CHUNK:
            self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return len(data)

    def close(self) -> None:
        """Seal the last chunk and close the file."""
        if self._out is None:
            return
        self._seal(bytes(self._buf), last=True)
        self._buf.clear()
        self._out.close()
        self._out = None

    def abort(self) -> None:
        """Close and delete the file."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SealedWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _SealedReader(io.RawIOBase):
    def __init__(self, path: Path, vault: PiiVault, owner_id: int) -> None:
        self.path, self.owner_id = path, owner_id
        self._fh = path.open("rb")
        try:
            head = self._fh.read(len(MAGIC) + 2)
            if len(head) < len(MAGIC) + 2 or head[:len(MAGIC)] != MAGIC:
                raise _broken(path, "is not a sealed upload")
            (n,) = struct.unpack(">H", head[len(MAGIC):])
            wrapped = self._fh.read(n)
            try:
                key = bytes.fromhex(vault.decrypt(_KEY_FIELD, wrapped,
                                                  context=_context(owner_id, path)))
            except CiphertextError as exc:
                raise _broken(path, "has a key that does not open here") from exc
            except KeyCustodyError as exc:
                raise SealedFileError(f"the stored file {path.name} was sealed under a data key "
                                      "that is no longer in the keyring (retired while the "
                                      "upload was pending?); upload the file again") from exc
            self._aead = AESGCM(key)
            self._pending = self._read_chunk()
        except BaseException:
            self._fh.close()
            raise
        self._index = 0
        self._plain = b""
        self._pos = 0
        self._done = False

    def _read_chunk(self) -> bytes | None:
        head = self._fh.read(4)
        if not head:
            return None
        if len(head) < 4:
            raise _broken(self.path, "ends inside a chunk")
        (n,) = struct.unpack(">I", head)
        if n < _TAG or n > CHUNK + _TAG:
            raise _broken(self.path, "has a chunk of impossible length")
        raw = self._fh.read(_NONCE + n)
        if len(raw) < _NONCE + n:
            raise _broken(self.path, "ends inside a chunk")
        return raw

    def _next_plain(self) -> bool:
        if self._done:
            return False
        raw = self._pending
        if raw is None:
            raise _broken(self.path, "ends before its last chunk")
        self._pending = self._read_chunk()
        last = self._pending is None
        try:
            self._plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:],
                                             _aad(self.owner_id, self.path, self._index, last))
        except InvalidTag as exc:
            raise _broken(self.path, f"failed authentication at chunk {self._index}") from exc
        self._pos = 0
        self._index += 1
        self._done = last
        return True

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._pos >= len(self._plain):
            if not self._next_plain():
                return 0
        n = min(len(b), len(self._plain) - self._pos)
        b[:n] = self._plain[self._pos:self._pos + n]
        self._pos += n
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_sealed(path: Path, vault: PiiVault, owner_id: int) -> io.BufferedReader:
    """A stream of the plaintext of a sealed file, authenticated chunk by chunk (a bad chunk
    raises :class:`SealedFileError` when it is reached)."""
    return io.BufferedReader(_SealedReader(path, vault, owner_id), buffer_size=CHUNK)


def read_sealed(path: Path, vault: PiiVault, owner_id: int, *, limit: int) -> bytes:
    """The whole plaintext, in memory, refused beyond ``limit`` bytes (e.g. a workbook, which
    needs random access)."""
    with open_sealed(path, vault, owner_id) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise SealedFileError(f"the stored file {path.name} is larger than "
                              f"{limit >> 20} MB; upload it again within the limit")
    return data


def is_sealed(path: Path) -> bool:
    """Whether ``path`` starts like a sealed file."""
    with path.open("rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


__all__ = ["CHUNK", "SealedFileError", "SealedWriter", "is_sealed",
           "open_sealed", "read_sealed"]
