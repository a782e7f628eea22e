"""Threshold secure aggregation for FedAvg: every owner's vector encrypted under a joint key,
only the sum decrypted.

Its parties (owners, the compute centre that adds, the manager that fuses) all run in this
process, and one object holds every key share: a benchmark stand-in until the protocol has its
home with real parties (issue 15, item 1: protocol 4.3's joint training).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import ParameterError, ValidationError

_LIMB_BITS = 36
_LIMBS = 2


class ThresholdSecureSum:
    """Secure aggregation for FedAvg under the threshold scheme (Mouchet et al., PETS 2021).

    Parties: ``n_owners`` data owners and one manager, each with its own key share of a joint
    public key (collective key generation over a fresh common reference string). Per call,
    every owner fixed-point encodes its vector (scale 10^``decimals``, split into two signed
    36-bit limbs so that values up to ~2^71 / 10^decimals fit the plaintext space) and
    encrypts it; the compute centre parses the ciphertext bytes and adds them; every party
    sends a partial decryption of that sum only; the manager fuses them. Bytes cross between
    the roles as they would on a network; all parties run in this process here.

    Leakage: the centre sees ciphertexts only; the manager and the owners learn the sum —
    in FedAvg, the total count and ``Σ n_k w_k``, i.e. the new global model each round — and
    nothing about a single owner's update (semi-honest, all parties must take part).

    Examples
    --------
    >>> agg = ThresholdSecureSum(2, seed=b"0123456789abcdef")
    >>> agg([np.array([1.5, -2.0]), np.array([0.25, 1e9])]).tolist()
    [1.75, 999999998.0]
    """

    def __init__(self, n_owners: int, *, decimals: int = 6, seed: bytes | None = None) -> None:
        import secrets

        from cipherseg.encoding import FixedPointEncoder
        from cipherseg.schemes.threshold import ThresholdParams, joint_public_key, new_crs
        from cipherseg.schemes.threshold_keys import KeyShare

        if not isinstance(n_owners, int) or n_owners < 2:
            raise ParameterError(f"secure aggregation needs at least 2 owners, got {n_owners!r}")
        params = ThresholdParams()
        if n_owners + 1 > params.max_parties:
            raise ParameterError(
                f"{n_owners} owners + the manager exceed the {params.max_parties} parties the "
                "threshold parameters allow"
            )
        FixedPointEncoder(decimals)  # validates decimals
        self.n_owners = n_owners
        self.decimals = decimals
        crs = new_crs(params, seed if seed is not None else secrets.token_bytes(32))
        # Party ids 1..n are the owners, n+1 the manager.
        self._shares = [KeyShare.generate(params, crs, party_id=i)
                        for i in range(1, n_owners + 2)]
        self.public_key = joint_public_key(params, crs, [k.public_share for k in self._shares])
        self.bytes_to_centre = 0
        self.bytes_partial_decryptions = 0
        self.calls = 0
        self.seconds = 0.0

    def _encode(self, v: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        from cipherseg.errors import EncodingError

        if not np.all(np.isfinite(v)):
            raise EncodingError("cannot aggregate NaN or infinite values")
        scale = 10**self.decimals
        ints = [round(float(x) * scale) for x in v]
        bound = 1 << (_LIMB_BITS * _LIMBS - 1)
        if any(abs(m) >= bound for m in ints):
            raise EncodingError(
                f"a value exceeds the secure-sum range ±2^{_LIMB_BITS * _LIMBS - 1}/10^"
                f"{self.decimals}; lower decimals"
            )
        half, base = 1 << (_LIMB_BITS - 1), 1 << _LIMB_BITS
        limbs = np.empty((_LIMBS, len(ints)), dtype=np.int64)
        for j, m in enumerate(ints):
            for i in range(_LIMBS):
                digit = ((m + half) % base) - half  # balanced digit in [-2^35, 2^35)
                limbs[i, j] = digit
                m = (m - digit) >> _LIMB_BITS
        return limbs.ravel()

    def _decode(self, limbs: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]:
        parts = limbs.reshape(_LIMBS, n)
        scale = 10**self.decimals
        return np.array([sum(int(parts[i, j]) << (_LIMB_BITS * i) for i in range(_LIMBS))
                         / scale for j in range(n)], dtype=np.float64)

    def __call__(self, vectors: Sequence[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        from cipherseg.schemes.threshold import Ciphertext, PartialDecryption, encrypt, fuse

        if len(vectors) != self.n_owners:
            raise ValidationError(f"expected one vector per owner ({self.n_owners}), got "
                                  f"{len(vectors)}")
        started = time.perf_counter()
        n = int(np.asarray(vectors[0]).size)
        uploads = []
        for v in vectors:  # at each owner
            arr = np.asarray(v, dtype=np.float64).ravel()
            if arr.size != n:
                raise ValidationError("every owner must send a vector of the same length")
            uploads.append(encrypt(self.public_key, self._encode(arr)).to_bytes())
        self.bytes_to_centre += sum(len(b) for b in uploads)
        # at the centre: public key only
        total = sum(Ciphertext.from_bytes(b, self.public_key) for b in uploads)
        if not isinstance(total, Ciphertext):  # pragma: no cover - n_owners >= 2
            raise ValidationError("nothing to aggregate")
        broadcast = total.to_bytes()
        partial_bytes = []
        for share in self._shares:  # at every party, on the broadcast aggregate only
            ct = Ciphertext.from_bytes(broadcast, self.public_key)
            partial_bytes.append(share.partial_decrypt(ct).to_bytes())
        self.bytes_partial_decryptions += sum(len(b) for b in partial_bytes)
        # at the manager
        partials = [PartialDecryption.from_bytes(b, self.public_key) for b in partial_bytes]
        result = self._decode(fuse(total, partials), n)
        self.calls += 1
        self.seconds += time.perf_counter() - started
        return result

    def report(self) -> dict[str, Any]:
        return {"aggregation": "threshold secure aggregation (multiparty RLWE, N=8192, "
                               f"{self.n_owners} owners + manager)",
                "secure_sums": self.calls, "bytes_to_centre": self.bytes_to_centre,
                "bytes_partial_decryptions": self.bytes_partial_decryptions,
                "secure_aggregation_seconds": self.seconds}
