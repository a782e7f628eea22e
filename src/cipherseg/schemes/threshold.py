"""Multi-party additive RLWE over exact integers (the "threshold" scheme): the public side.

After Mouchet, Troncoso-Pastoriza, Bossuat & Hubaux, "Multiparty Homomorphic Encryption from
Ring-Learning-with-Errors", PETS 2021 (the BFV-based N-out-of-N scheme, restricted to what an
aggregation needs: encryption, addition, collective decryption):

* a **common reference polynomial** a, expanded with SHAKE-256 from a seed all parties share
  (:func:`new_crs`);
* every party i samples a ternary secret s_i and publishes p_i = -a·s_i + e_i
  (:class:`~cipherseg.schemes.threshold_keys.KeyShare`);
* the **joint public key** is (b, a) with b = Σ p_i, whose secret s = Σ s_i nobody holds
  (:func:`joint_public_key`);
* anyone encrypts an int64 vector m, packed into polynomial coefficients, as
  (c0, c1) = (b·u + e0 + Δ·m, a·u + e1), Δ = ⌊q/t⌋ (:func:`encrypt`); ciphertexts add (``+``);
* every party sends a **partial decryption** h_i = s_i·c1 + E_i with smudging noise E_i
  uniform on [-2^B, 2^B) (:meth:`KeyShare.partial_decrypt`);
* the manager **fuses**: m = round(t/q · (c0 + Σ h_i)) (:func:`fuse`), and checks the
  remaining noise, so a missing, foreign or corrupted partial decryption is detected.

Only the coefficients that carry values are kept in c0 and in partial decryptions (c1 must stay
whole), so a k-means aggregate of a few dozen integers costs one ring element plus a few
dozen residues on the wire.

This module holds nothing that can decrypt: secret shares live in
:mod:`cipherseg.schemes.threshold_keys`, which the compute centre does not import.

Security (see ``docs/threshold.md``): the default set — N = 8192, q the product of five 31-bit
primes (log2 q ≈ 155), uniform ternary secrets, σ = 3.2 errors — is within the
HomomorphicEncryption.org standard's 128-bit bound for N = 8192 (log2 q ≤ 218 in its table for
ternary secrets, Albrecht et al. 2018); parameter sets above that bound are refused. Smudging
noise makes each released partial decryption within statistical distance 2^-40 (per decrypted
ring element of N coefficients) of one that depends on neither the secret shares nor the
ciphertext noise, for up to ``max_parties`` = 7 parties and ciphertexts that sum up to
``max_summands`` = 2^20 fresh encryptions. Plaintext sums must stay in [-2^41, 2^41)
(t = 2^42). The model is semi-honest: a corrupted partial decryption makes the fusion noise
check fail (a random error passes with probability about 2^-15 per coefficient), but a party
that adds an exact multiple of Δ shifts the result undetectably; active security would need
zero-knowledge proofs of correct decryption.

>>> import numpy as np
>>> from cipherseg.schemes.threshold_keys import KeyShare
>>> params = ThresholdParams()
>>> crs = new_crs(params, b"a seed the parties agreed on...")
>>> shares = [KeyShare.generate(params, crs, party_id=i) for i in (1, 2, 3)]
>>> pk = joint_public_key(params, crs, [s.public_share for s in shares])
>>> ct = encrypt(pk, np.array([5, -7])) + encrypt(pk, np.array([10, 20]))
>>> fuse(ct, [s.partial_decrypt(ct) for s in shares])
array([15, 13])
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import (
    CiphertextError,
    ParameterError,
    ProtocolError,
    ValidationError,
)
from cipherseg.schemes.he_standard import HE_STANDARD_MAX_LOG_Q
from cipherseg.schemes.rlwe_sampling import (
    RandomSource,
    SeededRandomSource,
    SystemRandomSource,
    gaussian_table,
    sample_gaussian,
    sample_ternary,
    sample_uniform_mod,
)
from cipherseg.schemes.rns_ntt import RnsRing, is_prime
from cipherseg.wire import Checksum, Reader, WireFormat

U64 = npt.NDArray[np.uint64]

# The HE standard's error width is 8/sqrt(2π) ≈ 3.19; narrower errors are outside its tables.
MIN_ERROR_STD = 3.19
MIN_SMUDGING_SECURITY = 40

# Five primes below 2^31, ≡ 1 (mod 2·8192): log2 q ≈ 154.998.
DEFAULT_MODULI: tuple[int, ...] = (2147352577, 2147205121, 2147074049, 2146959361, 2146713601)

# Envelope of every threshold object (cipherseg.wire): SHA-256/128 checksum, which doubles as a
# ciphertext's identity (partial decryptions are bound to it). 3: the cipherseg.wire envelope
# (2 had its own; 1 used BLAKE2b, 2.3x slower here).
_WIRE = WireFormat(b"CSTH", 3, "threshold object", checksum=Checksum.SHA256_128)
_FP_LEN = 16
_KIND_PARAMS, _KIND_CRS, _KIND_SHARE, _KIND_PK, _KIND_CT, _KIND_PARTIAL, _KIND_SECRET = (
    "threshold parameters", "common reference string", "public key share", "joint public key",
    "ciphertext", "partial decryption", "secret key share")
# A ciphertext with at most this many values computes its truncated c0 (and partial
# decryptions) with one exact float64 matrix product instead of a full inverse transform.
HEAD_PRODUCT_LIMIT = 64


def _digest(*parts: bytes) -> bytes:
    """SHA-256 truncated to 128 bits (hardware-accelerated: a 164 KB ciphertext in 0.1 ms)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()[:_FP_LEN]


def pack(kind: str, body: bytes) -> bytes:
    """The envelope of a threshold object of ``kind`` whose binary body is ``body``."""
    return _WIRE.pack({"kind": kind}, [body])


def envelope_checksum(data: bytes) -> bytes:
    """The checksum of an envelope made by :func:`pack` (its last 16 bytes). It is a
    collision-resistant digest of the whole object: ciphertexts use it as their identity."""
    return bytes(data[-Checksum.SHA256_128.value:])


def unpack(kind: str, data: bytes) -> bytes:
    """Check the envelope of a serialised object of ``kind`` and return its body."""
    envelope = _WIRE.unpack(data, kind=kind)
    if len(envelope.blobs) != 1:
        raise CiphertextError(f"{kind}: expected one body, got {len(envelope.blobs)} blobs")
    return envelope.blobs[0]


class _Reader(Reader):
    """A body reader that also reads residues checked against their primes."""

    def residues(self, moduli: tuple[int, ...], shape: tuple[int, ...]) -> U64:
        """uint32 residues of shape (..., K, n), each row checked below its prime."""
        count = int(np.prod(shape))
        raw = np.frombuffer(self.take(4 * count), dtype="<u4").reshape(shape)
        if (raw >= np.array(moduli, dtype=np.uint32)[:, None]).any():
            raise CiphertextError(f"{self.what}: a residue is not reduced modulo its prime")
        return raw.astype(np.uint64)


def _residue_bytes(arr: U64) -> bytes:
    return np.ascontiguousarray(arr, dtype="<u4").tobytes()


def _frozen(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    arr.flags.writeable = False
    return arr


# ====================================================================== parameters
@dataclass(frozen=True, slots=True)
class ThresholdParams:
    """Parameters of the threshold scheme, checked for security and correctness on creation.

    Parameters
    ----------
    poly_degree:
        Ring degree N (coefficients per ring element, values per block).
    moduli:
        RNS primes of q: distinct, below 2^31, ≡ 1 (mod 2N).
    plain_modulus:
        t; plaintext sums live in [-t/2, t/2) (centred representatives). At most 2^62.
    max_parties:
        Largest number of key shares a joint key may combine.
    max_summands:
        Largest number of fresh encryptions one ciphertext may be the sum of.
    smudging_security:
        λ: each partial decryption is within statistical distance 2^-λ of one independent of
        the secrets, per decrypted ring element. At least 40.
    error_std:
        σ of the discrete Gaussian errors (truncated at ⌊6σ⌋); the HE standard's ≈ 3.2.

    Examples
    --------
    >>> p = ThresholdParams()
    >>> (p.poly_degree, round(p.log_q, 1), p.security_level, p.smudging_bits)
    (8192, 155.0, 128, 94)
    >>> ThresholdParams(moduli=DEFAULT_MODULI + (2146418689, 2146336769, 2146091009))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    cipherseg.errors.ParameterError: log2(q) = 248.0 exceeds ... 128-bit bound 218 for N=8192 ...
    """

    poly_degree: int = 8192
    moduli: tuple[int, ...] = DEFAULT_MODULI
    plain_modulus: int = 2**42
    max_parties: int = 7
    max_summands: int = 2**20
    smudging_security: int = 40
    error_std: float = 3.2

    def __post_init__(self) -> None:
        n = self.poly_degree
        object.__setattr__(self, "moduli", tuple(int(p) for p in self.moduli))
        if not isinstance(n, int) or n not in HE_STANDARD_MAX_LOG_Q[128]:
            raise ParameterError(
                f"poly_degree must be one of {sorted(HE_STANDARD_MAX_LOG_Q[128])} (the ring "
                f"degrees of the HE standard), got {n!r}"
            )
        if not self.moduli:
            raise ParameterError("moduli must name at least one prime")
        for p in self.moduli:
            if not (2**20 < p < 2**31) or (p - 1) % (2 * n) or not is_prime(p):
                raise ParameterError(
                    f"modulus {p} must be a prime in (2^20, 2^31) with p ≡ 1 (mod {2 * n})"
                )
        if len(set(self.moduli)) != len(self.moduli):
            raise ParameterError(f"moduli must be distinct, got {self.moduli}")
        if not (self.error_std >= MIN_ERROR_STD and self.error_std <= 64):
            raise ParameterError(
                f"error_std must be in [{MIN_ERROR_STD}, 64] (the HE standard assumes σ≈3.2), "
                f"got {self.error_std}"
            )
        bound = HE_STANDARD_MAX_LOG_Q[128][n]
        if self.log_q > bound:
            raise ParameterError(
                f"log2(q) = {self.log_q:.1f} exceeds the HomomorphicEncryption.org standard's "
                f"128-bit bound {bound} for N={n} (ternary secret, σ≈3.2); use fewer primes or "
                "a larger poly_degree"
            )
        if not 2 <= self.plain_modulus <= 2**62:
            raise ParameterError(f"plain_modulus must be in [2, 2^62], got {self.plain_modulus}")
        if not 1 <= self.max_parties <= 2**16:
            raise ParameterError(f"max_parties must be in [1, 65536], got {self.max_parties}")
        if not 1 <= self.max_summands <= 2**40:
            raise ParameterError(f"max_summands must be in [1, 2^40], got {self.max_summands}")
        if self.smudging_security < MIN_SMUDGING_SECURITY or self.smudging_security > 128:
            raise ParameterError(
                f"smudging_security must be in [{MIN_SMUDGING_SECURITY}, 128] bits, got "
                f"{self.smudging_security}"
            )
        if self.q <= 2 * self.decode_residual_bound:
            raise ParameterError(
                f"q (2^{self.log_q:.1f}) is too small to decrypt correctly: the smudged noise of "
                f"{self.max_parties} parties over {self.max_summands} summands needs "
                f"q > 2^{math.log2(2 * self.decode_residual_bound):.1f}; add a prime, lower "
                "max_parties, max_summands or plain_modulus"
            )

    # ------------------------------------------------------------------ derived quantities
    @property
    def q(self) -> int:
        """The ciphertext modulus, product of ``moduli``."""
        return math.prod(self.moduli)

    @property
    def log_q(self) -> float:
        return sum(math.log2(p) for p in self.moduli)

    @property
    def delta(self) -> int:
        """Δ = ⌊q/t⌋, the plaintext scaling."""
        return self.q // self.plain_modulus

    @property
    def min_value(self) -> int:
        """Smallest plaintext (and plaintext sum) representable: -⌊t/2⌋."""
        return -(self.plain_modulus // 2)

    @property
    def max_value(self) -> int:
        """Largest plaintext (and plaintext sum) representable: ⌊(t-1)/2⌋."""
        return (self.plain_modulus - 1) // 2

    @property
    def error_bound(self) -> int:
        """Largest |error coefficient|: ⌊6σ⌋ (the truncation of the Gaussian)."""
        return math.floor(6 * self.error_std)

    @property
    def fresh_noise_bound(self) -> int:
        """Worst-case |e·u + e0 + e1·s| of a fresh encryption under a key of max_parties shares:
        ‖e‖∞ ≤ P·E, ‖s‖∞ ≤ P, ‖u‖₁ ≤ N, so each coefficient ≤ E·(2·N·P + 1)."""
        return self.error_bound * (2 * self.poly_degree * self.max_parties + 1)

    @property
    def ciphertext_noise_bound(self) -> int:
        """Worst-case noise of a sum of ``max_summands`` fresh encryptions."""
        return self.max_summands * self.fresh_noise_bound

    @property
    def smudging_bits(self) -> int:
        """B: smudging noise is uniform on [-2^B, 2^B), the least B with
        N · ciphertext_noise_bound / 2^(B+1) ≤ 2^-λ (smudging lemma, union over N coefficients)."""
        x = self.poly_degree * self.ciphertext_noise_bound << self.smudging_security
        return (x - 1).bit_length() - 1

    @property
    def decryption_noise_bound(self) -> int:
        """Worst-case noise after fusing: ciphertext noise + max_parties smudging terms."""
        return self.ciphertext_noise_bound + self.max_parties * (1 << self.smudging_bits)

    @property
    def decode_residual_bound(self) -> int:
        """Bound on |t·x − m·q| for a correct decryption x of m: t·noise + t·t/2."""
        t = self.plain_modulus
        return t * self.decryption_noise_bound + t * (t // 2 + 1)

    @property
    def tamper_detection_bits(self) -> float:
        """log2 of 1 / the chance that a random (tampered) coefficient passes the noise check."""
        return math.log2(self.q / (2 * self.decode_residual_bound))

    @property
    def security_level(self) -> int:
        """Highest HE-standard level (128, 192 or 256 bits) that log2(q) meets for this N."""
        for level in (256, 192, 128):
            if self.log_q <= HE_STANDARD_MAX_LOG_Q[level][self.poly_degree]:
                return level
        raise ParameterError("unreachable: parameters were checked at construction")

    def security_estimate(self) -> str:
        """A one-line, citable statement of the security estimate."""
        return (
            f"N={self.poly_degree}, log2(q)={self.log_q:.1f} <= "
            f"{HE_STANDARD_MAX_LOG_Q[self.security_level][self.poly_degree]}: "
            f"{self.security_level}-bit classical security for RLWE with uniform ternary "
            f"secrets and σ={self.error_std} (HomomorphicEncryption.org Security Standard, "
            f"Albrecht et al. 2018, ternary-secret table); smudging 2^{self.smudging_bits} "
            f"gives 2^-"
            f"{self.smudging_security} statistical distance per decrypted ring element for "
            f"<= {self.max_parties} parties and <= {self.max_summands} summands"
        )

    @property
    def fingerprint(self) -> bytes:
        """16-byte identifier of this parameter set (every object carries it)."""
        return _params_fingerprint(self)

    @property
    def ring(self) -> RnsRing:
        """The RNS ring (transform tables are built once per parameter set and cached)."""
        return _ring(self.poly_degree, self.moduli)

    # ------------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        body = struct.pack("<IB", self.poly_degree, len(self.moduli))
        body += struct.pack(f"<{len(self.moduli)}I", *self.moduli)
        body += struct.pack("<QHQHd", self.plain_modulus, self.max_parties - 1,
                            self.max_summands, self.smudging_security, self.error_std)
        return pack(_KIND_PARAMS, body)

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdParams:
        """Load and re-check a parameter set (an insecure one is refused)."""
        r = _Reader(unpack(_KIND_PARAMS, data), "threshold parameters")
        n, k = r.unpack("<IB")
        moduli = r.unpack(f"<{k}I")
        t, parties, summands, lam, sigma = r.unpack("<QHQHd")
        r.done()
        return cls(n, tuple(moduli), t, parties + 1, summands, lam, sigma)


@functools.lru_cache(maxsize=16)
def _params_fingerprint(params: ThresholdParams) -> bytes:
    return _digest(b"params", params.to_bytes())


@functools.lru_cache(maxsize=8)
def _ring(n: int, moduli: tuple[int, ...]) -> RnsRing:
    return RnsRing(n, moduli)


@functools.lru_cache(maxsize=8)
def _gaussian_table(sigma: float, bound: int) -> npt.NDArray[np.uint64]:
    return gaussian_table(sigma, bound)


def sample_error(params: ThresholdParams, source: RandomSource,
                 shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    """Errors of the scheme: discrete Gaussian σ = error_std, truncated at ⌊6σ⌋."""
    return sample_gaussian(source, shape, params.error_std, params.error_bound,
                           _gaussian_table(params.error_std, params.error_bound))


# ====================================================================== CRS
@dataclass(frozen=True, slots=True, eq=False)
class CommonReference:
    """The common reference polynomial a (NTT form), expanded from a shared seed.

    Build it with :func:`new_crs`; it serialises as the parameters and the seed only.
    """

    params: ThresholdParams
    seed: bytes
    a_hat: U64 = field(repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def fingerprint(self) -> bytes:
        return _digest(b"crs", self.params.fingerprint, self.seed)

    @property
    def a_fft(self) -> npt.NDArray[np.complex128]:
        """a prepared for fast products with small polynomials (computed once)."""
        prepared = self._cache.get("a_fft")
        if prepared is None:
            ring = self.params.ring
            prepared = ring.fft_prepare(ring.inverse(self.a_hat))
            self._cache["a_fft"] = prepared
        out: npt.NDArray[np.complex128] = prepared
        return out

    def to_bytes(self) -> bytes:
        pb = self.params.to_bytes()
        return pack(_KIND_CRS, struct.pack("<I", len(pb)) + pb
                    + struct.pack("<H", len(self.seed)) + self.seed)

    @classmethod
    def from_bytes(cls, data: bytes) -> CommonReference:
        r = _Reader(unpack(_KIND_CRS, data), "common reference string")
        (plen,) = r.unpack("<I")
        params = ThresholdParams.from_bytes(r.take(plen))
        (slen,) = r.unpack("<H")
        seed = r.take(slen)
        r.done()
        return new_crs(params, seed)


def new_crs(params: ThresholdParams, seed: bytes) -> CommonReference:
    """Expand the common reference polynomial from a seed every party knows.

    The polynomial is sampled uniformly modulo each prime directly in the NTT domain (the
    transform is a bijection) from SHAKE-256(label ‖ seed), domain-separated by the parameter
    fingerprint. The seed is public; it must be fresh per session (e.g. 32 bytes from
    ``secrets.token_bytes`` chosen by the manager, or a hash of all parties' nonces).

    Examples
    --------
    >>> crs = new_crs(ThresholdParams(), b"0123456789abcdef")
    >>> crs.a_hat.shape
    (5, 8192)
    >>> CommonReference.from_bytes(crs.to_bytes()).fingerprint == crs.fingerprint
    True
    """
    if not isinstance(seed, (bytes, bytearray)) or len(seed) < 16 or len(seed) > 1024:
        raise ParameterError("the CRS seed must be 16 to 1024 bytes (use secrets.token_bytes(32))")
    source = SeededRandomSource(bytes(seed), b"cipherseg/threshold/crs/v1" + params.fingerprint)
    a_hat = sample_uniform_mod(source, params.moduli, (params.poly_degree,))
    return CommonReference(params, bytes(seed), _frozen(a_hat))


def _check_crs(params: ThresholdParams, crs: CommonReference) -> None:
    if crs.params != params:
        raise ParameterError(
            "the common reference string was made for other parameters; build it with "
            "new_crs(params, seed) from the session's parameters"
        )


# ====================================================================== public shares and key
@dataclass(frozen=True, slots=True, eq=False)
class PublicShare:
    """Party ``party_id``'s public key share p_i = -a·s_i + e_i (NTT form).

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> share = KeyShare.generate(params, crs, party_id=4).public_share
    >>> PublicShare.from_bytes(share.to_bytes(), crs).party_id
    4
    """

    crs: CommonReference = field(repr=False)
    party_id: int
    p_hat: U64 = field(repr=False)

    def to_bytes(self) -> bytes:
        body = (self.crs.params.fingerprint + self.crs.fingerprint
                + struct.pack("<I", self.party_id) + _residue_bytes(self.p_hat))
        return pack(_KIND_SHARE, body)

    @classmethod
    def from_bytes(cls, data: bytes, crs: CommonReference) -> PublicShare:
        """Load a share, refusing one made for other parameters or another CRS."""
        params = crs.params
        r = _Reader(unpack(_KIND_SHARE, data), "public key share")
        _check_fingerprints(r, params, crs, "public key share")
        (party_id,) = r.unpack("<I")
        p_hat = r.residues(params.moduli, (len(params.moduli), params.poly_degree))
        r.done()
        return cls(crs, party_id, _frozen(p_hat))


def _check_fingerprints(r: _Reader, params: ThresholdParams, crs: CommonReference,
                        what: str) -> None:
    if r.take(_FP_LEN) != params.fingerprint:
        raise ParameterError(f"this {what} was made under other threshold parameters")
    if r.take(_FP_LEN) != crs.fingerprint:
        raise ParameterError(
            f"this {what} was made over another common reference string (CRS fingerprint "
            "mismatch): every party must expand the CRS from the session's seed"
        )


@dataclass(frozen=True, slots=True, eq=False)
class JointPublicKey:
    """The joint public key (b, a), b = Σ p_i over the parties ``party_ids``.

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> shares = [KeyShare.generate(params, crs, party_id=i) for i in (1, 2)]
    >>> pk = joint_public_key(params, crs, [s.public_share for s in shares])
    >>> JointPublicKey.from_bytes(pk.to_bytes(), crs).party_ids
    (1, 2)
    """

    crs: CommonReference = field(repr=False)
    party_ids: tuple[int, ...]
    b_hat: U64 = field(repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def params(self) -> ThresholdParams:
        return self.crs.params

    @property
    def fingerprint(self) -> bytes:
        fp = self._cache.get("fp")
        if fp is None:
            fp = _digest(b"pk", self.crs.fingerprint,
                         struct.pack(f"<{len(self.party_ids)}I", *self.party_ids),
                         _residue_bytes(self.b_hat))
            self._cache["fp"] = fp
        return bytes(fp)

    @property
    def b_coeff(self) -> U64:
        """b in coefficient form (for the truncated c0 product)."""
        b = self._cache.get("b_coeff")
        if b is None:
            b = _frozen(self.params.ring.inverse(self.b_hat))
            self._cache["b_coeff"] = b
        out: U64 = b
        return out

    @property
    def b_fft(self) -> npt.NDArray[np.complex128]:
        """b prepared for fast products with small polynomials (computed once)."""
        prepared = self._cache.get("b_fft")
        if prepared is None:
            prepared = self.params.ring.fft_prepare(self.b_coeff)
            self._cache["b_fft"] = prepared
        out: npt.NDArray[np.complex128] = prepared
        return out

    def to_bytes(self) -> bytes:
        params = self.params
        body = (params.fingerprint + self.crs.fingerprint
                + struct.pack(f"<H{len(self.party_ids)}I", len(self.party_ids), *self.party_ids)
                + _residue_bytes(self.b_hat))
        return pack(_KIND_PK, body)

    @classmethod
    def from_bytes(cls, data: bytes, crs: CommonReference) -> JointPublicKey:
        params = crs.params
        r = _Reader(unpack(_KIND_PK, data), "joint public key")
        _check_fingerprints(r, params, crs, "joint public key")
        (count,) = r.unpack("<H")
        ids = r.unpack(f"<{count}I")
        b_hat = r.residues(params.moduli, (len(params.moduli), params.poly_degree))
        r.done()
        _check_party_ids(params, list(ids))
        if list(ids) != sorted(ids):
            raise CiphertextError("joint public key: party ids are not in canonical order")
        return cls(crs, tuple(ids), _frozen(b_hat))


def _duplicates(ids: Sequence[int]) -> list[int]:
    seen: set[int] = set()
    dupes: set[int] = set()
    for i in ids:
        (dupes if i in seen else seen).add(i)
    return sorted(dupes)


def _check_party_ids(params: ThresholdParams, ids: Sequence[int]) -> None:
    dupes = _duplicates(ids)
    if dupes:
        raise ProtocolError(f"duplicated key share from party {dupes}: each party contributes once")
    if len(ids) < 2:
        raise ProtocolError(f"a joint key needs at least 2 parties, got {len(ids)}")
    if len(ids) > params.max_parties:
        raise ParameterError(
            f"{len(ids)} parties exceed max_parties={params.max_parties} of these parameters "
            "(the smudging and noise budget were sized for that many)"
        )


def joint_public_key(
    params: ThresholdParams,
    crs: CommonReference,
    public_shares: Iterable[PublicShare],
    *,
    expected_party_ids: Iterable[int] | None = None,
) -> JointPublicKey:
    """Aggregate the parties' public shares into the joint public key.

    Refuses shares made under other parameters or another CRS, a party twice, more than
    ``max_parties`` shares, and — if ``expected_party_ids`` is given — a missing or unexpected
    party.

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> s1 = KeyShare.generate(params, crs, party_id=1)
    >>> joint_public_key(params, crs, [s1.public_share, s1.public_share])
    Traceback (most recent call last):
      ...
    cipherseg.errors.ProtocolError: duplicated key share from party [1]: each party contributes once
    """
    _check_crs(params, crs)
    shares = list(public_shares)
    for s in shares:
        if not isinstance(s, PublicShare):
            raise ValidationError(f"expected PublicShare objects, got {type(s).__name__}")
        if s.crs.params != params:
            raise ParameterError(f"the share of party {s.party_id} uses other parameters")
        if s.crs.fingerprint != crs.fingerprint:
            raise ParameterError(
                f"the share of party {s.party_id} was made over another common reference string"
            )
    ids = [s.party_id for s in shares]
    _check_party_ids(params, ids)
    if expected_party_ids is not None:
        expected = set(expected_party_ids)
        missing, extra = sorted(expected - set(ids)), sorted(set(ids) - expected)
        if missing or extra:
            raise ProtocolError(
                f"key shares do not match the session's parties: missing {missing}, "
                f"unexpected {extra}"
            )
    ring = params.ring
    b_hat = shares[0].p_hat
    for s in shares[1:]:
        b_hat = ring.add(b_hat, s.p_hat)
    return JointPublicKey(crs, tuple(sorted(ids)), _frozen(np.array(b_hat)))


# ====================================================================== ciphertexts
@dataclass(frozen=True, slots=True, eq=False)
class Ciphertext:
    """An encrypted int64 vector of ``length`` values under a joint public key.

    ``c0`` holds only the ``length`` coefficients that carry values (shape (K, length));
    ``c1`` holds whole ring elements, one per block of N values (shape (blocks, K, N)).
    ``summands`` counts the fresh encryptions summed into it (it bounds the noise).
    """

    public_key: JointPublicKey = field(repr=False)
    length: int
    summands: int
    c0: U64 = field(repr=False)
    c1: U64 = field(repr=False)
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def params(self) -> ThresholdParams:
        return self.public_key.params

    @property
    def blocks(self) -> int:
        return int(self.c1.shape[0])

    @property
    def digest(self) -> bytes:
        """16-byte identifier of this exact ciphertext (partial decryptions are bound to it):
        the checksum of its serialised envelope, so a party that received it hashes it once."""
        d = self._cache.get("digest")
        if d is None:
            self.to_bytes()
            d = self._cache["digest"]
        return d

    def _body(self) -> bytes:
        """The canonical serialised body (cached: ciphertexts are immutable)."""
        body = self._cache.get("body")
        if body is None:
            body = (self.public_key.fingerprint
                    + struct.pack("<QQI", self.length, self.summands, self.blocks)
                    + _residue_bytes(self.c0) + _residue_bytes(self.c1))
            self._cache["body"] = body
        return body

    def __add__(self, other: Ciphertext) -> Ciphertext:
        if not isinstance(other, Ciphertext):
            return NotImplemented
        if other.public_key.fingerprint != self.public_key.fingerprint:
            raise CiphertextError("cannot add ciphertexts made under different joint keys")
        if other.length != self.length:
            raise CiphertextError(
                f"cannot add ciphertexts of {self.length} and {other.length} values"
            )
        summands = self.summands + other.summands
        if summands > self.params.max_summands:
            raise ParameterError(
                f"the sum would combine {summands} encryptions, more than max_summands="
                f"{self.params.max_summands} that the smudging noise was sized for"
            )
        ring = self.params.ring
        return Ciphertext(self.public_key, self.length, summands,
                          _frozen(ring.add(self.c0, other.c0)),
                          _frozen(ring.add(self.c1, other.c1)))

    def __radd__(self, other: object) -> Ciphertext:
        if isinstance(other, int) and other == 0:  # so that sum(ciphertexts) works
            return self
        return NotImplemented

    def to_bytes(self) -> bytes:
        data = pack(_KIND_CT, self._body())
        self._cache.setdefault("digest", envelope_checksum(data))
        return data

    @classmethod
    def from_bytes(cls, data: bytes, public_key: JointPublicKey) -> Ciphertext:
        """Load a ciphertext made under ``public_key``; anything else raises CiphertextError."""
        params = public_key.params
        r = _Reader(unpack(_KIND_CT, data), "ciphertext")
        if r.take(_FP_LEN) != public_key.fingerprint:
            raise CiphertextError(
                "this ciphertext was made under another joint public key (fingerprint "
                "mismatch); it belongs to another session or parameter set"
            )
        length, summands, blocks = r.unpack("<QQI")
        n, k = params.poly_degree, len(params.moduli)
        if length < 1 or blocks != -(-length // n):
            raise CiphertextError(f"ciphertext: {blocks} blocks cannot hold {length} values")
        if not 1 <= summands <= params.max_summands:
            raise CiphertextError(f"ciphertext: summand count {summands} is out of range")
        c0 = r.residues(params.moduli, (k, length))
        c1 = r.residues(params.moduli, (blocks, k, n))
        r.done()
        return cls(public_key, length, summands, _frozen(c0), _frozen(c1),
                   {"body": r.body, "digest": envelope_checksum(data)})


def _flatten_blocks(arr: U64, length: int) -> U64:
    """(B, K, N) block coefficients → (K, length): block j's values are columns jN…jN+N-1."""
    b, k, n = arr.shape
    return np.ascontiguousarray(np.moveaxis(arr, 1, 0).reshape(k, b * n)[:, :length])


def encrypt(public_key: JointPublicKey, values: npt.ArrayLike, *,
            rng: RandomSource | None = None) -> Ciphertext:
    """Encrypt a 1-D vector of integers in [min_value, max_value] under the joint key.

    Values are packed N per block into polynomial coefficients (any length). Floats are
    refused: encode rationals first with :class:`~cipherseg.encoding.FixedPointEncoder`.

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> shares = [KeyShare.generate(params, crs, party_id=i) for i in (1, 2)]
    >>> pk = joint_public_key(params, crs, [s.public_share for s in shares])
    >>> ct = encrypt(pk, [2**40, -(2**40)])
    >>> fuse(ct, [s.partial_decrypt(ct) for s in shares]).tolist()
    [1099511627776, -1099511627776]
    """
    params = public_key.params
    m = _check_plain(params, values)
    source = rng or SystemRandomSource()
    ring = params.ring
    n, length = params.poly_degree, m.size
    blocks = -(-length // n)
    u = sample_ternary(source, (blocks, n))
    e1 = sample_error(params, source, (blocks, n))
    e0 = sample_error(params, source, (length,))
    # a·u and b·u with u ternary: exact float-FFT products with the pre-transformed a and b.
    c1 = ring.fft_multiply_small(public_key.crs.a_fft, u, addend=e1)
    if blocks == 1 and length <= HEAD_PRODUCT_LIMIT:
        bu = ring.multiply_small_head(public_key.b_coeff, u[0], length)
    else:
        bu = _flatten_blocks(ring.fft_multiply_small(public_key.b_fft, u), length)
    scaled = ring.mul_scalar(ring.from_int(m), params.delta)
    c0 = ring.add(ring.add(bu, ring.from_int(e0)), scaled)
    return Ciphertext(public_key, length, 1, _frozen(c0), _frozen(c1))


def _check_plain(params: ThresholdParams, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValidationError(f"encrypt takes a non-empty 1-D vector, got shape {arr.shape}")
    if arr.dtype == object:
        try:
            arr = np.array([int(v) for v in arr], dtype=object)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"encrypt takes integers: {exc}") from exc
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValidationError(
            f"encrypt takes integers, got dtype {arr.dtype}; encode rationals first with "
            "cipherseg.encoding.FixedPointEncoder"
        )
    lo, hi = params.min_value, params.max_value
    if arr.dtype == object or arr.dtype == np.uint64:
        if any(int(v) < lo or int(v) > hi for v in arr):
            raise ValidationError(f"values must lie in [{lo}, {hi}] (t = {params.plain_modulus})")
        return np.array([int(v) for v in arr], dtype=np.int64)
    arr = arr.astype(np.int64)
    if (arr < lo).any() or (arr > hi).any():
        raise ValidationError(f"values must lie in [{lo}, {hi}] (t = {params.plain_modulus})")
    return arr


# ====================================================================== partial decryptions
@dataclass(frozen=True, slots=True, eq=False)
class PartialDecryption:
    """Party ``party_id``'s share h_i = s_i·c1 + E_i of the decryption of one ciphertext.

    Only the ``length`` value-carrying coefficients are kept (shape (K, length)). It is bound to
    the ciphertext by ``ciphertext_digest`` and to the key by ``key_fingerprint``.
    """

    party_id: int
    key_fingerprint: bytes = field(repr=False)
    ciphertext_digest: bytes = field(repr=False)
    h: U64 = field(repr=False)

    def to_bytes(self) -> bytes:
        body = (self.key_fingerprint + self.ciphertext_digest
                + struct.pack("<IQ", self.party_id, self.h.shape[1]) + _residue_bytes(self.h))
        return pack(_KIND_PARTIAL, body)

    @classmethod
    def from_bytes(cls, data: bytes, public_key: JointPublicKey) -> PartialDecryption:
        """Load a partial decryption; one under another joint key raises CiphertextError."""
        params = public_key.params
        r = _Reader(unpack(_KIND_PARTIAL, data), "partial decryption")
        key_fp = r.take(_FP_LEN)
        if key_fp != public_key.fingerprint:
            raise CiphertextError(
                "this partial decryption was made under another joint public key"
            )
        ct_digest = r.take(_FP_LEN)
        party_id, length = r.unpack("<IQ")
        if length < 1 or length > 2**32:
            raise CiphertextError(f"partial decryption: bad length {length}")
        h = r.residues(params.moduli, (len(params.moduli), length))
        r.done()
        return cls(party_id, key_fp, ct_digest, _frozen(h))


def fuse(ciphertext: Ciphertext, partials: Iterable[PartialDecryption]) -> npt.NDArray[np.int64]:
    """Combine every party's partial decryption into the plaintext (the manager's step).

    Refuses a missing, duplicated or unknown party's share and shares of another ciphertext or
    key (:class:`~cipherseg.errors.ProtocolError`), and checks that the remaining noise is
    within the bound a correct decryption has; a corrupted share fails that check
    (:class:`~cipherseg.errors.CiphertextError`) except with probability
    2^-``tamper_detection_bits`` per coefficient.

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> params = ThresholdParams(); crs = new_crs(params, b"0123456789abcdef")
    >>> shares = [KeyShare.generate(params, crs, party_id=i) for i in (1, 2, 3)]
    >>> pk = joint_public_key(params, crs, [s.public_share for s in shares])
    >>> ct = encrypt(pk, [7])
    >>> fuse(ct, [s.partial_decrypt(ct) for s in shares[:2]])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
      ...
    cipherseg.errors.ProtocolError: missing partial decryption from party [3]; ...
    """
    parts = list(partials)
    pk = ciphertext.public_key
    ids = [p.party_id for p in parts]
    dupes = _duplicates(ids)
    if dupes:
        raise ProtocolError(f"duplicated partial decryption from party {dupes}")
    missing = sorted(set(pk.party_ids) - set(ids))
    if missing:
        raise ProtocolError(
            f"missing partial decryption from party {missing}; every party of the joint key "
            "must contribute"
        )
    unknown = sorted(set(ids) - set(pk.party_ids))
    if unknown:
        raise ProtocolError(f"partial decryption from party {unknown}, not part of the joint key")
    for p in parts:
        if p.key_fingerprint != pk.fingerprint:
            raise CiphertextError(
                f"the partial decryption of party {p.party_id} was made under another key"
            )
        if p.ciphertext_digest != ciphertext.digest:
            raise ProtocolError(
                f"the partial decryption of party {p.party_id} is for another ciphertext "
                "(digest mismatch): decrypt the aggregate the centre broadcast"
            )
        if p.h.shape != ciphertext.c0.shape:
            raise CiphertextError(f"the partial decryption of party {p.party_id} has wrong shape")
    values, residual = combine(ciphertext, [p.h for p in parts])
    bound = ciphertext.params.decode_residual_bound
    bad = int(np.count_nonzero(np.abs(residual) > bound))
    if bad:
        raise CiphertextError(
            f"decryption noise out of bounds in {bad} of {ciphertext.length} values: a partial "
            "decryption is corrupted or made with a wrong key share, or the ciphertext was "
            "tampered with; do not use this result"
        )
    return values


def combine(ciphertext: Ciphertext,
            shares: Sequence[U64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """c0 + Σ h_i decoded without any check: (values, residuals t·x − m·q).

    For analysis and tests (e.g. what a coalition missing one share would see); the manager
    uses :func:`fuse`.
    """
    params = ciphertext.params
    ring = params.ring
    acc = ciphertext.c0
    for h in shares:
        acc = ring.add(acc, h)
    x = ring.to_int(acc)  # centred, object array
    t, q = params.plain_modulus, params.q
    m = (2 * t * x + q) // (2 * q)
    residual = t * x - m * q
    centred = (m + t // 2) % t - t // 2
    return centred.astype(np.int64), residual


# ====================================================================== aggregation interface
class ThresholdAggregation:
    """The threshold scheme behind :class:`~cipherseg.schemes.base.AggregationScheme`: one
    object per session, over the session's parameters and common reference string; the joint
    key is set once every key party's public share is known. Key parties' secret side:
    :meth:`cipherseg.schemes.threshold_keys.KeyShare.for_scheme`.

    Examples
    --------
    >>> from cipherseg.schemes.threshold_keys import KeyShare
    >>> scheme = ThresholdAggregation(ThresholdParams(), b"0123456789abcdef", (0, 1))
    >>> keys = [KeyShare.for_scheme(scheme, i) for i in (0, 1)]
    >>> _ = scheme.set_joint_key([k.public_share_bytes() for k in keys])
    >>> total = scheme.aggregate([scheme.load(scheme.encrypt(np.array(v)))
    ...                           for v in ([1, 2], [3, -4])])
    >>> scheme.fuse(total, [scheme.partial_from_bytes(k.partial_decrypt(total).to_bytes())
    ...                     for k in keys])
    array([ 4, -2])
    """

    name = "threshold"

    def __init__(self, params: ThresholdParams, crs_seed: bytes,
                 key_party_ids: Sequence[int]) -> None:
        _check_party_ids(params, list(key_party_ids))
        self.params = params
        self.crs_seed = bytes(crs_seed)
        self.crs = new_crs(params, self.crs_seed)
        self._key_party_ids = tuple(int(i) for i in key_party_ids)
        self.public_key: JointPublicKey | None = None

    @property
    def max_value(self) -> int:
        return self.params.max_value

    @property
    def key_party_ids(self) -> tuple[int, ...]:
        return self._key_party_ids

    @property
    def key_fingerprint(self) -> bytes | None:
        return None if self.public_key is None else self.public_key.fingerprint

    def public_parameters(self) -> tuple[bytes, bytes]:
        return self.params.to_bytes(), self.crs_seed

    def public_share_from_bytes(self, data: bytes, party_id: int) -> PublicShare:
        share = PublicShare.from_bytes(data, self.crs)
        if share.party_id != party_id:
            raise ProtocolError(f"a key share labelled party {share.party_id} was sent as "
                                f"party {party_id}'s")
        return share

    def set_joint_key(self, shares: Sequence[bytes]) -> bytes:
        if len(shares) != len(self._key_party_ids):
            raise ProtocolError(f"{len(shares)} key shares for {len(self._key_party_ids)} "
                                "key parties")
        loaded = [self.public_share_from_bytes(b, i)
                  for b, i in zip(shares, self._key_party_ids, strict=True)]
        self.public_key = joint_public_key(self.params, self.crs, loaded,
                                           expected_party_ids=self._key_party_ids)
        return self.public_key.fingerprint

    def _key(self) -> JointPublicKey:
        if self.public_key is None:
            raise ProtocolError("a ciphertext before the joint key was set up")
        return self.public_key

    def encrypt(self, values: npt.NDArray[np.int64]) -> bytes:
        return encrypt(self._key(), values).to_bytes()

    def load(self, data: bytes) -> Ciphertext:
        return Ciphertext.from_bytes(data, self._key())

    def digest(self, data: bytes) -> bytes:
        return envelope_checksum(data)

    def length(self, ciphertext: Any) -> int:
        return _as_ct(ciphertext).length

    def aggregate(self, contributions: Sequence[Any]) -> Ciphertext:
        parts = [_as_ct(c) for c in contributions]
        total: Ciphertext = sum(parts[1:], parts[0])
        return total

    def partial_from_bytes(self, data: bytes) -> PartialDecryption:
        return PartialDecryption.from_bytes(data, self._key())

    def fuse(self, aggregate: Any, partials: Iterable[Any]) -> npt.NDArray[np.int64]:
        return fuse(_as_ct(aggregate), partials)


def _as_ct(value: Any) -> Ciphertext:
    if not isinstance(value, Ciphertext):
        raise CiphertextError(f"expected a threshold Ciphertext, got {type(value).__name__}")
    return value


__all__ = [
    "DEFAULT_MODULI",
    "HE_STANDARD_MAX_LOG_Q",
    "Ciphertext",
    "CommonReference",
    "JointPublicKey",
    "PartialDecryption",
    "PublicShare",
    "ThresholdAggregation",
    "ThresholdParams",
    "combine",
    "encrypt",
    "fuse",
    "joint_public_key",
    "new_crs",
    "sample_error",
]
