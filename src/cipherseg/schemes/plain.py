"""The scheme interface without encryption: for tests, debugging and benchmark baselines.

Never selectable by the web platform: it protects nothing.

>>> from cipherseg.schemes.plain import PlainScheme
>>> s = PlainScheme()
>>> s.decrypt(s.add(s.encrypt([1.0, 2.0]), s.encrypt([3.0, 4.0])))
array([4., 6.])
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError
from cipherseg.schemes.base import Capability

_MAGIC = b"CSPLN1"


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
        arr = np.ascontiguousarray(ciphertext, dtype="<f8")
        return _MAGIC + struct.pack("<Q", arr.size) + arr.tobytes()

    def ciphertext_from_bytes(self, data: bytes) -> npt.NDArray[np.float64]:
        head = len(_MAGIC) + 8
        if len(data) < head or not data.startswith(_MAGIC):
            raise CiphertextError("not a plain-scheme ciphertext (bad header)")
        (n,) = struct.unpack_from("<Q", data, len(_MAGIC))
        if len(data) != head + 8 * n:
            raise CiphertextError(
                f"plain ciphertext truncated or padded: expected {head + 8 * n} bytes, "
                f"got {len(data)}"
            )
        return np.frombuffer(data, dtype="<f8", offset=head).copy()
