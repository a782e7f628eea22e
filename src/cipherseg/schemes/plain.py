"""The scheme interface without encryption: for tests, debugging and benchmark baselines.

Never selectable by the web platform: it protects nothing.

>>> from cipherseg.schemes.plain import PlainScheme
>>> s = PlainScheme()
>>> s.decrypt(s.add(s.encrypt([1.0, 2.0]), s.encrypt([3.0, 4.0])))
array([4., 6.])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError
from cipherseg.schemes.base import Capability
from cipherseg.wire import WireFormat

# Envelope of plain "ciphertexts" (cipherseg.wire, CRC-32); 2: the cipherseg.wire envelope
# (1 was magic CSPLN1, a u64 count and the float64 values).
_WIRE = WireFormat(b"CSPL", 2, "plain-scheme ciphertext")


class PlainScheme:
    """Numpy vectors standing in for ciphertexts (no security at all)."""

    name = "plain"
    capabilities = (
        Capability.ADD | Capability.MUL_PLAIN | Capability.MUL_CT | Capability.ROTATE
        | Capability.LINEAR_MAP
    )

    def encrypt(self, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.array(values, dtype=np.float64).ravel()

    def decrypt(self, ciphertext: Any) -> npt.NDArray[np.float64]:
        return np.array(ciphertext, dtype=np.float64)

    def add(self, a: Any, b: Any) -> npt.NDArray[np.float64]:
        return np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64)

    def mul_plain(self, a: Any, plain: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.asarray(a) * np.asarray(plain, dtype=np.float64)

    def mul(self, a: Any, b: Any) -> npt.NDArray[np.float64]:
        return np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)

    def ciphertext_to_bytes(self, ciphertext: Any) -> bytes:
        arr = np.ascontiguousarray(ciphertext, dtype="<f8").ravel()
        return _WIRE.pack({"kind": "ciphertext", "size": arr.size}, [arr.tobytes()])

    def ciphertext_from_bytes(self, data: bytes) -> npt.NDArray[np.float64]:
        env = _WIRE.unpack(data, kind="ciphertext")
        size = env.header.get("size")
        if (not isinstance(size, int) or isinstance(size, bool) or len(env.blobs) != 1
                or len(env.blobs[0]) != 8 * size):
            raise CiphertextError("plain ciphertext: its size does not match its values")
        return np.frombuffer(env.blobs[0], dtype="<f8").astype(np.float64)
