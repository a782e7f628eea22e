"""The aggregation interface without encryption: the federated baseline of the benchmarks.

No keys and no key parties: a "ciphertext" is the integer vector itself, so whoever relays it
reads it. Never selectable by the web platform: it protects nothing. It runs the same
protocol code as :class:`~cipherseg.schemes.threshold.ThresholdAggregation`, so a benchmark
comparing the two measures the cryptography alone.

>>> s = PlainAggregation()
>>> s.fuse(s.aggregate([s.load(s.encrypt(np.array([1, 2]))),
...                     s.load(s.encrypt(np.array([3, -4])))]), [])
array([ 4, -2])
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError, KeyCustodyError
from cipherseg.wire import WireFormat

# Envelope of plain "ciphertexts" (cipherseg.wire, CRC-32); 3: int64 values for the aggregation
# interface (2 held float64 values of the former float interface, 1 had its own envelope).
_WIRE = WireFormat(b"CSPL", 3, "plain-scheme ciphertext")


class PlainAggregation:
    """Integer vectors standing in for ciphertexts (no security at all)."""

    name = "plain"
    max_value = 2**62
    key_fingerprint = b""

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        return ()

    def public_parameters(self) -> tuple[bytes, bytes]:
        return b"", b""

    def public_share_from_bytes(self, data: bytes, party_id: int) -> Any:
        raise KeyCustodyError("the plain scheme has no key shares")

    def set_joint_key(self, shares: Sequence[bytes]) -> bytes:
        raise KeyCustodyError("the plain scheme has no key shares")

    def encrypt(self, values: npt.NDArray[np.int64]) -> bytes:
        arr = np.ascontiguousarray(values, dtype="<i8").ravel()
        return _WIRE.pack({"kind": "ciphertext", "size": arr.size}, [arr.tobytes()])

    def load(self, data: bytes) -> npt.NDArray[np.int64]:
        env = _WIRE.unpack(data, kind="ciphertext")
        size = env.header.get("size")
        if (not isinstance(size, int) or isinstance(size, bool) or len(env.blobs) != 1
                or len(env.blobs[0]) != 8 * size):
            raise CiphertextError("plain ciphertext: its size does not match its values")
        return np.frombuffer(env.blobs[0], dtype="<i8").astype(np.int64)

    def digest(self, data: bytes) -> bytes:
        return hashlib.sha256(data).digest()[:16]

    def length(self, ciphertext: Any) -> int:
        return int(np.size(ciphertext))

    def aggregate(self, contributions: Sequence[Any]) -> npt.NDArray[np.int64]:
        sizes = {np.shape(c) for c in contributions}
        if len(sizes) != 1:
            raise CiphertextError("plain contributions of different lengths cannot be added")
        total: npt.NDArray[np.int64] = np.sum(contributions, axis=0, dtype=np.int64)
        return total

    def partial_from_bytes(self, data: bytes) -> Any:
        raise KeyCustodyError("the plain scheme has no partial decryptions")

    def fuse(self, aggregate: Any, partials: Iterable[Any]) -> npt.NDArray[np.int64]:
        if list(partials):
            raise KeyCustodyError("the plain scheme has no partial decryptions")
        return np.asarray(aggregate, dtype=np.int64)
