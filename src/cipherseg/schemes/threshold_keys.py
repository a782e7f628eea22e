"""A party's secret share of the threshold scheme: key generation and partial decryption.

Only key-holding parties (data owners and the manager) import this module; the compute centre
works with :mod:`cipherseg.schemes.threshold` alone and never sees a secret share.

>>> import numpy as np
>>> from cipherseg.schemes.threshold import (
...     ThresholdParams, encrypt, fuse, joint_public_key, new_crs)
>>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
>>> a, b = KeyShare.generate(params, crs, party_id=1), KeyShare.generate(params, crs, party_id=2)
>>> pk = joint_public_key(params, crs, [a.public_share, b.public_share])
>>> ct = encrypt(pk, np.arange(4))
>>> fuse(ct, [a.partial_decrypt(ct), b.partial_decrypt(ct)])
array([0, 1, 2, 3])
"""

from __future__ import annotations

import secrets
import struct

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError, KeyCustodyError, ParameterError
from cipherseg.schemes.base import AggregationScheme
from cipherseg.schemes.rlwe_sampling import (
    RandomSource,
    SystemRandomSource,
    sample_ternary,
    sample_wide_uniform_mod,
)
from cipherseg.schemes.threshold import (
    _KIND_SECRET,
    HEAD_PRODUCT_LIMIT,
    Ciphertext,
    CommonReference,
    PartialDecryption,
    PublicShare,
    ThresholdAggregation,
    ThresholdParams,
    _check_crs,
    _check_fingerprints,
    _flatten_blocks,
    _frozen,
    _Reader,
    pack,
    sample_error,
    unpack,
)

U64 = npt.NDArray[np.uint64]


class KeyShare:
    """One party's ternary secret s_i, its public share and its partial decryptions.

    Parameters are checked by :meth:`generate`; construct through it (or
    :meth:`from_secret_bytes`). ``repr`` never shows key material.

    Examples
    --------
    >>> from cipherseg.schemes.threshold import ThresholdParams, new_crs
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> share = KeyShare.generate(params, crs, party_id=7)
    >>> share
    KeyShare(party_id=7)
    >>> share.public_share.party_id
    7
    """

    __slots__ = ("_head", "_s", "_s_hat", "crs", "party_id", "public_share")

    def __init__(self, crs: CommonReference, party_id: int, secret: npt.NDArray[np.int8],
                 public_share: PublicShare) -> None:
        self.crs = crs
        self.party_id = party_id
        self._s = secret
        ring = crs.params.ring
        self._s_hat = _frozen(ring.forward(ring.from_int(secret.astype(np.int64))))
        self.public_share = public_share
        self._head: dict[int, npt.NDArray[np.float64]] = {}  # s_i's negacyclic rows, per length

    def __repr__(self) -> str:
        return f"KeyShare(party_id={self.party_id})"

    @property
    def params(self) -> ThresholdParams:
        return self.crs.params

    @classmethod
    def generate(cls, params: ThresholdParams, crs: CommonReference,
                 party_id: int | None = None, *, rng: RandomSource | None = None) -> KeyShare:
        """Sample s_i (uniform ternary) and the public share p_i = -a·s_i + e_i.

        ``party_id`` (0 … 2^32-1) names the party in every share it sends; if omitted, a random
        32-bit id is drawn. ``rng`` defaults to the operating-system CSPRNG; pass a seeded
        source only in tests.
        """
        _check_crs(params, crs)
        if party_id is None:
            party_id = secrets.randbits(32)
        if not isinstance(party_id, int) or not 0 <= party_id < 2**32:
            raise ParameterError(f"party_id must be an integer in [0, 2^32), got {party_id!r}")
        source = rng or SystemRandomSource()
        ring = params.ring
        s = sample_ternary(source, (params.poly_degree,)).astype(np.int8)
        e = sample_error(params, source, (params.poly_degree,))
        s_hat = ring.forward(ring.from_int(s.astype(np.int64)))
        p_hat = ring.sub(ring.forward(ring.from_int(e)), ring.mul(crs.a_hat, s_hat))
        share = PublicShare(crs, party_id, _frozen(p_hat))
        return cls(crs, party_id, _frozen(s), share)

    @classmethod
    def for_scheme(cls, scheme: AggregationScheme, party_id: int) -> KeyShare:
        """A fresh share of ``scheme``'s joint key for key party ``party_id``."""
        if not isinstance(scheme, ThresholdAggregation):
            raise KeyCustodyError(f"scheme {scheme.name!r} has no threshold key shares")
        return cls.generate(scheme.params, scheme.crs, party_id)

    def public_share_bytes(self) -> bytes:
        return self.public_share.to_bytes()

    def partial_decrypt(self, ciphertext: Ciphertext, *,
                        rng: RandomSource | None = None) -> PartialDecryption:
        """h_i = s_i·c1 + E_i on the value-carrying coefficients, E_i uniform on
        [-2^B, 2^B) with B = ``params.smudging_bits``.

        Refuses a ciphertext under a key this party is not part of. Decrypt only the
        aggregate the protocol says to decrypt: every partial decryption releases (with the
        others) the plaintext of that ciphertext.
        """
        pk = ciphertext.public_key
        if pk.crs.fingerprint != self.crs.fingerprint:
            raise CiphertextError("this ciphertext was made over another common reference string")
        if self.party_id not in pk.party_ids:
            raise KeyCustodyError(
                f"party {self.party_id} is not part of the joint key of this ciphertext "
                f"(parties {list(pk.party_ids)})"
            )
        params = self.params
        ring = params.ring
        length = ciphertext.length
        if ciphertext.blocks == 1 and length <= HEAD_PRODUCT_LIMIT:
            small = self._s.astype(np.int64)
            matrix = self._head.get(length)
            if matrix is None:
                if len(self._head) >= 8:
                    self._head.clear()
                matrix = self._head[length] = ring.small_head_matrix(small, length)
            sc1 = ring.multiply_small_head(ciphertext.c1[0], small, length, matrix)
        else:
            full = ring.inverse(ring.mul(ring.forward(ciphertext.c1), self._s_hat))
            sc1 = _flatten_blocks(full, length)
        smudge = sample_wide_uniform_mod(rng or SystemRandomSource(), params.smudging_bits,
                                         params.moduli, (length,))
        h = ring.add(sc1, smudge)
        return PartialDecryption(self.party_id, pk.fingerprint, ciphertext.digest, _frozen(h))

    # ------------------------------------------------------------------ persistence (secret!)
    def secret_to_bytes(self) -> bytes:
        """Serialise the SECRET share (store it encrypted at rest; never send it to anyone)."""
        params = self.params
        body = (params.fingerprint + self.crs.fingerprint + struct.pack("<I", self.party_id)
                + self._s.astype("<i1").tobytes()
                + np.ascontiguousarray(self.public_share.p_hat, dtype="<u4").tobytes())
        return pack(_KIND_SECRET, body)

    @classmethod
    def from_secret_bytes(cls, data: bytes, crs: CommonReference) -> KeyShare:
        """Load a share saved with :meth:`secret_to_bytes` (checked against ``crs``)."""
        params = crs.params
        r = _Reader(unpack(_KIND_SECRET, data), "secret key share")
        _check_fingerprints(r, params, crs, "secret key share")
        (party_id,) = r.unpack("<I")
        s = np.frombuffer(r.take(params.poly_degree), dtype="<i1").astype(np.int8)
        if (np.abs(s.astype(np.int64)) > 1).any():
            raise CiphertextError("secret key share: the secret is not ternary")
        p_hat = r.residues(params.moduli, (len(params.moduli), params.poly_degree))
        r.done()
        return cls(crs, party_id, _frozen(s), PublicShare(crs, party_id, _frozen(p_hat)))


__all__ = ["KeyShare"]
