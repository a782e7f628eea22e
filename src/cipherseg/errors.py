"""One error hierarchy for cipherseg.

Every error says what was wrong and what the caller can do about it.

>>> from cipherseg.errors import CipherSegError, CiphertextError
>>> issubclass(CiphertextError, CipherSegError)
True
"""

from __future__ import annotations


class CipherSegError(Exception):
    """Root of every error cipherseg raises on purpose."""


class ParameterError(CipherSegError, ValueError):
    """A parameter is out of range, inconsistent or insecure."""


class ValidationError(CipherSegError, ValueError):
    """Input data (a CSV, an array, a form) is malformed."""


class EncodingError(ValidationError):
    """A value cannot be encoded exactly enough (NaN, inf, out of range)."""


class CiphertextError(CipherSegError, ValueError):
    """A ciphertext or serialised key is truncated, tampered or from another context."""


class KeyCustodyError(CipherSegError):
    """A party was given key material it must not hold (e.g. a secret key at the centre)."""


class CapabilityError(CipherSegError):
    """A scheme lacks an operation a protocol needs."""


class ProtocolError(CipherSegError):
    """A protocol message is out of order, of an unknown version or for another session."""


class TransportError(CipherSegError):
    """The other party cannot be reached, refused the request or answered something unusable."""
