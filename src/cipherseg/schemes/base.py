"""The interface every homomorphic scheme implements, and its capabilities.

A protocol states the capabilities it needs up front with :func:`require`, so a scheme that
cannot do the job fails with a sentence instead of deep inside a computation.

>>> from cipherseg.schemes.base import Capability, require
>>> from cipherseg.schemes.plain import PlainScheme
>>> require(PlainScheme(), Capability.ADD | Capability.MUL_CT, purpose="the outsourced k-means")
"""

from __future__ import annotations

import enum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CapabilityError


class Capability(enum.Flag):
    """Operations a scheme can evaluate on ciphertexts."""

    ADD = enum.auto()
    MUL_PLAIN = enum.auto()
    MUL_CT = enum.auto()
    ROTATE = enum.auto()
    LINEAR_MAP = enum.auto()
    THRESHOLD = enum.auto()


_VERBS = {
    Capability.ADD: "add two ciphertexts",
    Capability.MUL_PLAIN: "multiply a ciphertext by a plaintext",
    Capability.MUL_CT: "multiply two ciphertexts",
    Capability.ROTATE: "rotate the slots of a ciphertext",
    Capability.LINEAR_MAP: "apply a linear transformation to a ciphertext",
    Capability.THRESHOLD: "decrypt jointly with threshold keys",
}


@runtime_checkable
class Scheme(Protocol):
    """What a protocol may ask of a scheme holding the keys to encrypt and decrypt.

    Ciphertext objects are scheme-specific and opaque to protocols; they cross process
    boundaries only as ``bytes`` through ``ciphertext_to_bytes``/``ciphertext_from_bytes``.
    """

    name: str
    capabilities: Capability

    def encrypt(self, values: npt.ArrayLike) -> Any:
        """Encrypt a 1-D vector of plaintext values into one ciphertext."""
        ...

    def decrypt(self, ciphertext: Any) -> npt.NDArray[np.float64]:
        """Decrypt one ciphertext into a 1-D vector."""
        ...

    def add(self, a: Any, b: Any) -> Any:
        """Slot-wise sum of two ciphertexts."""
        ...

    def mul_plain(self, a: Any, plain: npt.ArrayLike) -> Any:
        """Slot-wise product of a ciphertext with a plaintext vector or scalar."""
        ...

    def ciphertext_to_bytes(self, ciphertext: Any) -> bytes:
        """Serialise a ciphertext, bound to this scheme's context."""
        ...

    def ciphertext_from_bytes(self, data: bytes) -> Any:
        """Load a ciphertext; raise :class:`~cipherseg.errors.CiphertextError` if it is bad."""
        ...


def require(scheme: Scheme, needed: Capability, *, purpose: str) -> None:
    """Raise :class:`CapabilityError` naming the first capability ``scheme`` lacks."""
    missing = needed & ~scheme.capabilities
    if missing:
        first = next(c for c in Capability if c in missing)
        raise CapabilityError(
            f"scheme {scheme.name!r} cannot {_VERBS[first]}; {purpose} needs "
            f"{first.name}. Choose a scheme with that capability (e.g. 'ckks')."
        )
