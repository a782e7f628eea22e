"""The interface aggregation protocols run on: an additively homomorphic scheme whose key is
split among key parties (N-out-of-N), so that only all of them together can open a sum.

Implementations: :class:`~cipherseg.schemes.threshold.ThresholdAggregation` (multiparty RLWE,
Mouchet et al.) and :class:`~cipherseg.schemes.plain.PlainAggregation` (no encryption and no
key parties: the federated baseline of the benchmarks, never offered by the platform).
Protocol 4.2 (:mod:`cipherseg.protocols.joint`) runs on this interface only; it picks the
implementation by the name its Setup message carries.

This module is the public side: every party may hold a scheme object, the compute centre
included. The secret side of a scheme (a :class:`DecryptionShare`) lives in a ``*_keys``
module the centre does not import (import-linter contract).

>>> import numpy as np
>>> from cipherseg.schemes.plain import PlainAggregation
>>> scheme = PlainAggregation()
>>> parts = [scheme.load(scheme.encrypt(np.array(v))) for v in ([1, 2], [10, -20])]
>>> scheme.fuse(scheme.aggregate(parts), [])
array([ 11, -18])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class AggregationScheme(Protocol):
    """Public operations of an aggregation scheme (one object per session).

    Contributions, aggregates and partial decryptions cross process boundaries as ``bytes``;
    the loaded objects are scheme-specific and opaque to protocols.
    """

    name: str

    @property
    def max_value(self) -> int:
        """Plaintext sums must stay in [-max_value, max_value]."""
        ...

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        """Parties whose partial decryption every decryption needs; () when the scheme has no
        keys (then :meth:`fuse` needs no partial decryption)."""
        ...

    def public_parameters(self) -> tuple[bytes, bytes]:
        """(parameters, common reference seed) for the session's Setup message."""
        ...

    def public_share_from_bytes(self, data: bytes, party_id: int) -> Any:
        """Load party ``party_id``'s public key share; refuse a share labelled otherwise."""
        ...

    def set_joint_key(self, shares: Sequence[bytes]) -> bytes:
        """Build the joint public key from every key party's public share (in
        :attr:`key_party_ids` order) and return its fingerprint."""
        ...

    @property
    def key_fingerprint(self) -> bytes | None:
        """The joint key's fingerprint once set (b"" for a scheme without keys)."""
        ...

    def encrypt(self, values: npt.NDArray[np.int64]) -> bytes:
        """Encrypt an integer vector under the joint key."""
        ...

    def load(self, data: bytes) -> Any:
        """Load a contribution or an aggregate; refuse malformed or foreign bytes."""
        ...

    def digest(self, data: bytes) -> bytes:
        """A collision-resistant identity of serialised ciphertext bytes (which :meth:`load`
        checks them against)."""
        ...

    def length(self, ciphertext: Any) -> int:
        """How many values a loaded ciphertext holds."""
        ...

    def aggregate(self, contributions: Sequence[Any]) -> Any:
        """The sum of loaded contributions (loaded; identical for every party that adds the
        same contributions in the same order)."""
        ...

    def partial_from_bytes(self, data: bytes) -> Any:
        """Load a key party's partial decryption."""
        ...

    def fuse(self, aggregate: Any, partials: Iterable[Any]) -> npt.NDArray[np.int64]:
        """Open a loaded aggregate from every key party's partial decryption, checking them."""
        ...


class DecryptionShare(Protocol):
    """The secret side held by one key party."""

    party_id: int

    def public_share_bytes(self) -> bytes:
        """The public key share to publish."""
        ...

    def partial_decrypt(self, ciphertext: Any) -> Any:
        """This party's partial decryption of a loaded aggregate (``.to_bytes()`` to send)."""
        ...
