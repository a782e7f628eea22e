"""Byte envelopes: the one wire format of every serialised cipherseg object.

Ciphertexts, keys and contexts of every scheme and the protocol messages all travel as::

    magic | u16 format version | u32 header length | JSON header | u32 blob count
          | (u64 blob length | blob) × count | checksum

* the **magic** names the family (``CSCK`` CKKS, ``CSTH`` threshold, ``CSVH`` VHE,
  ``CSPL`` plain, ``CSMSG`` protocol messages); the **format version** is the family's, and a
  reader refuses any other;
* the **JSON header** is a UTF-8 object with the scalar fields (by convention ``kind`` names
  the object within its family: ``"ciphertext"``, ``"context"``…); the **blobs** carry bytes
  (SEAL blobs, residues, nested envelopes);
* the **checksum** covers everything before it and is chosen per family
  (:class:`Checksum`): CRC-32 catches truncation and accidental corruption (every
  single-bit error, every burst up to 32 bits; docs/security.md says why not a MAC);
  SHA-256 truncated to 128 bits where the checksum also serves as a collision-resistant
  identity (threshold ciphertexts: partial decryptions are bound to it); none for protocol
  messages, whose ciphertexts carry their own.

A reader checks, in order: bytes, magic, checksum (so a flipped bit anywhere is reported as
corruption), format version, a header length within ``max_header``, a JSON object, blob
counts and lengths within the bytes that are there, and no trailing bytes — before it
allocates anything sized by the input. Every refusal is the family's error
(:class:`~cipherseg.errors.CiphertextError`, or :class:`~cipherseg.errors.ProtocolError` for
messages) with a sentence saying what was wrong.

>>> fmt = WireFormat(b"CSDOC", 1, "doc object")
>>> data = fmt.pack({"kind": "note", "n": 2}, [b"ab", b""])
>>> env = fmt.unpack(data, kind="note")
>>> env.header["n"], env.blobs
(2, (b'ab', b''))
>>> try:
...     fmt.unpack(data[:-1])
... except CiphertextError as exc:
...     print(exc)
doc object corrupted or truncated (checksum mismatch); ask the sender to resend
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cipherseg.errors import CipherSegError, CiphertextError

Bytes = bytes | bytearray | memoryview

_HEAD = struct.Struct("<HI")  # format version, header length
_COUNT = struct.Struct("<I")
_LENGTH = struct.Struct("<Q")


class Checksum(enum.Enum):
    """What an envelope ends with; the value is its length in bytes."""

    NONE = 0
    CRC32 = 4
    SHA256_128 = 16

    def compute(self, parts: Sequence[Bytes]) -> bytes:
        if self is Checksum.CRC32:
            crc = 0
            for part in parts:
                crc = zlib.crc32(part, crc)
            return struct.pack("<I", crc)
        if self is Checksum.SHA256_128:
            h = hashlib.sha256()
            for part in parts:
                h.update(part)
            return h.digest()[:16]
        return b""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A checked envelope: its header, its blobs and its checksum (empty for ``NONE``)."""

    header: dict[str, Any]
    blobs: tuple[bytes, ...]
    checksum: bytes


@dataclass(frozen=True, slots=True)
class WireFormat:
    """One family of envelopes: magic, format version, checksum, error class, limits.

    ``what`` names the family in error messages ("CKKS object", "protocol message").
    """

    magic: bytes
    version: int
    what: str
    checksum: Checksum = Checksum.CRC32
    error: type[CipherSegError] = CiphertextError
    max_header: int = 64 * 1024

    # ---------------------------------------------------------------- writing
    def pack(self, header: Mapping[str, Any], blobs: Sequence[Bytes] = ()) -> bytes:
        """The envelope of ``header`` (JSON-serialisable) and ``blobs``."""
        head = json.dumps(header, separators=(",", ":")).encode()
        if len(head) > self.max_header:
            raise self.error(f"{self.what}: a {len(head)}-byte header exceeds the "
                             f"{self.max_header}-byte limit")
        parts: list[Bytes] = [self.magic, _HEAD.pack(self.version, len(head)), head,
                              _COUNT.pack(len(blobs))]
        for blob in blobs:
            parts.append(_LENGTH.pack(memoryview(blob).nbytes))
            parts.append(blob)
        parts.append(self.checksum.compute(parts))
        return b"".join(parts)

    # ---------------------------------------------------------------- reading
    def unpack(self, data: Bytes, *, kind: str | None = None) -> Envelope:
        """Check ``data`` and return its header and blobs; with ``kind``, also refuse an
        envelope whose header names another kind."""
        view = self._view(data)
        size = self.checksum.value
        if len(view) < len(self.magic) + _HEAD.size + _COUNT.size + size:
            self._check_magic(view)
            raise self.error(f"{self.what} truncated: {len(view)} bytes is shorter than an "
                             "envelope")
        self._check_magic(view)
        body, trailer = view[:len(view) - size], bytes(view[len(view) - size:])
        if self.checksum is not Checksum.NONE and self.checksum.compute([body]) != trailer:
            raise self.error(f"{self.what} corrupted or truncated (checksum mismatch); ask "
                             "the sender to resend")
        header, pos = self._header(body)
        if kind is not None and header.get("kind") != kind:
            found = header.get("kind")
            raise self.error(f"expected a {kind}, got a "
                             f"{found if isinstance(found, str) else 'malformed ' + self.what}")
        if pos + _COUNT.size > len(body):
            raise self.error(f"{self.what} truncated after its header")
        (count,) = _COUNT.unpack_from(body, pos)
        pos += _COUNT.size
        if count * _LENGTH.size > len(body) - pos:
            raise self.error(f"{self.what} truncated: {count} blobs announced, "
                             f"{len(body) - pos} bytes left")
        blobs = []
        for _ in range(count):
            if pos + _LENGTH.size > len(body):
                raise self.error(f"{self.what} truncated inside its blob lengths")
            (length,) = _LENGTH.unpack_from(body, pos)
            pos += _LENGTH.size
            if length > len(body) - pos:
                raise self.error(f"{self.what} truncated inside a blob ({length} bytes "
                                 f"announced, {len(body) - pos} left)")
            blobs.append(bytes(body[pos:pos + length]))
            pos += length
        if pos != len(body):
            raise self.error(f"{len(body) - pos} trailing bytes after the {self.what}")
        return Envelope(header, tuple(blobs), trailer)

    def peek_header(self, data: Bytes) -> dict[str, Any]:
        """The JSON header alone (magic, version and header checked; blobs and checksum not
        read, nothing copied beyond the header)."""
        view = self._view(data)
        self._check_magic(view)
        return self._header(view)[0]

    # ---------------------------------------------------------------- checks
    def _view(self, data: Bytes) -> memoryview:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise self.error(f"a {self.what} must be bytes, got {type(data).__name__}")
        return memoryview(data).cast("B")

    def _check_magic(self, view: memoryview) -> None:
        head = bytes(view[:len(self.magic)])
        if head != self.magic:
            if len(head) < len(self.magic) and self.magic.startswith(head):
                raise self.error(f"{self.what} truncated: {len(head)} bytes is shorter than "
                                 "an envelope")
            raise self.error(f"not a cipherseg {self.what} (bad magic)")

    def _header(self, view: memoryview) -> tuple[dict[str, Any], int]:
        pos = len(self.magic)
        if pos + _HEAD.size > len(view):
            raise self.error(f"{self.what} truncated inside its envelope")
        version, length = _HEAD.unpack_from(view, pos)
        pos += _HEAD.size
        if version != self.version:
            raise self.error(f"{self.what}: format version {version} is not supported (this "
                             f"build reads {self.version}); upgrade the older party")
        if length > self.max_header:
            raise self.error(f"{self.what}: a {length}-byte header exceeds the "
                             f"{self.max_header}-byte limit")
        if pos + length > len(view):
            raise self.error(f"{self.what} truncated inside its header")
        try:
            header = json.loads(bytes(view[pos:pos + length]))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self.error(f"malformed {self.what}: the header is not JSON ({exc})") from exc
        if not isinstance(header, dict):
            raise self.error(f"malformed {self.what}: the header is not a JSON object")
        return header, pos + length


class Reader:
    """Sequential reader of a binary blob: every read is bounded by what is there.

    >>> r = Reader(struct.pack("<I", 7) + b"xy", "doc blob")
    >>> r.unpack("<I"), r.take(2)
    ((7,), b'xy')
    >>> r.take(1)
    Traceback (most recent call last):
      ...
    cipherseg.errors.CiphertextError: doc blob: body is inconsistent with its declared sizes
    """

    def __init__(self, body: bytes, what: str,
                 error: type[CipherSegError] = CiphertextError) -> None:
        self.body = body
        self.pos = 0
        self.what = what
        self.error = error

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.body):
            raise self.error(f"{self.what}: body is inconsistent with its declared sizes")
        out = self.body[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        s = struct.Struct(fmt)
        return s.unpack(self.take(s.size))

    def done(self) -> None:
        if self.pos != len(self.body):
            raise self.error(f"{self.what}: {len(self.body) - self.pos} unexpected bytes")


__all__ = ["Checksum", "Envelope", "Reader", "WireFormat"]
