"""Zhou–Wornell integer vector homomorphic encryption (VHE): parameters and public operations.

**Insecure. For reproducing the original system only.** The key-switching and linear-
transformation matrices this scheme hands to the evaluator give the secret key away:
:mod:`cipherseg.schemes.vhe_attack` recovers it (after Bogos, Gaspoz & Vaudenay,
"Cryptanalysis of a homomorphic encryption scheme", Cryptography and Communications 10, 2018)
and ``tests/security/test_vhe_attack.py`` decrypts ciphertexts with nothing but public material.

The scheme (Zhou & Wornell, "Efficient homomorphic encryption on integer vectors and its
applications", ITA 2014), all arithmetic modulo ``q = 2**ciphertext_bits``:

* secret key ``S = [I, T]`` (``d × (d+m)``, ``T`` uniform mod q); a ciphertext ``c`` of the
  integer vector ``x`` satisfies ``S·c = w·x + e (mod q)`` with small noise ``e``;
  decryption is ``x = round(centred(S·c) / w)``, correct while ``|e| < w/2`` and
  ``|w·x + e| < q/2``;
* key switching from ``S`` to ``S' = [I, T']``: bit decomposition ``c*`` of ``c``
  (``ℓ = ciphertext_bits`` bits per entry, least significant first) and the key-switching
  matrix ``M = [S* − T'·A + E; A]`` with ``S*·c* = S·c``; then ``S'·(M·c*) = w·x + e + E·c*``;
* encryption with the *public* key-switching matrix from ``I`` to ``S``: ``c = M·(w·x)*``;
* addition ``c1 + c2`` and integer combinations ``Σ a_t·c_t``;
* linear transformation ``G`` (integers): key switching from ``G·S`` to a key of ``G``'s
  output dimension.

This module holds only what the evaluator (compute centre) may hold: parameters, ciphertexts,
key-switching matrices and the operations on them. Key generation, secret-key encryption and
decryption live in :mod:`cipherseg.schemes.vhe_keys`.

Arithmetic is exact: for ``ciphertext_bits ≤ 64`` numpy ``uint64`` arrays whose wrap-around
modulo 2^64 is reduced to q by a mask (q divides 2^64); above that, numpy object arrays of
Python integers. Key switching multiplies the 0/1 bit matrix by the key split into 20-bit
limbs in float64 (exact: every partial sum stays below 2^53), so 100 000 vectors switch in
well under a second on the ``uint64`` path.

Every ciphertext carries worst-case bounds on its noise and on its plaintext; an operation
that would push either past what decrypts correctly is refused with
:class:`~cipherseg.errors.ParameterError` instead of producing garbage.

>>> import numpy as np
>>> from cipherseg.schemes.vhe_keys import VHESecretKey
>>> params = VHEParams(dim=3, plaintext_bits=16, ciphertext_bits=48, w=2**12, noise_bound=4)
>>> key = VHESecretKey.generate(params, rng=np.random.default_rng(0))
>>> ctx = VHEContext(params)
>>> c = ctx.add(key.encrypt([[1, -2, 3]]), key.encrypt([[10, 20, 30]]))
>>> key.decrypt(c)
array([[11, 18, 33]])
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from cipherseg.errors import CiphertextError, EncodingError, ParameterError
from cipherseg.wire import Envelope, WireFormat

Array = npt.NDArray[Any]

VHE_INSECURE_WARNING = (
    "WARNING: scheme 'vhe' (Zhou-Wornell integer vector HE) is BROKEN. Its public key-switching "
    "and linear-transformation matrices reveal the secret key (Bogos, Gaspoz & Vaudenay 2018; "
    "`cipherseg attack vhe` does it in under a second), and its seed-mode k-means shows the "
    "centroids and every customer's cluster to the compute centre. Use it only to reproduce "
    "the original system's experiments, never on real customer data."
)

MAX_CIPHERTEXT_BITS = 1024
_LIMB = 20  # bits per limb in the exact float64 products (K · 2^20 < 2^53 for K < 2^33)
_LIMB_MASK = (1 << _LIMB) - 1
_CHUNK = 8192  # rows per block in key switching (bounds the float64 bit matrix to a few MB)


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VHEParams:
    """VHE parameters and the operation budget they must support, validated on construction.

    Parameters
    ----------
    dim:
        d, the length of the plaintext integer vectors (features per customer).
    plaintext_bits:
        l: plaintexts are integers with ``|x| < 2**(plaintext_bits - 1)``.
    ciphertext_bits:
        log2 q (q = 2^ciphertext_bits) and ℓ, the bit-decomposition length. ``≤ 64`` uses the
        ``uint64`` path, larger values the exact Python-integer path.
    w:
        The plaintext weight in ``S·c = w·x + e``.
    noise_bound:
        B: every fresh noise entry (secret-key encryption, entries of E) is uniform in
        ``[-B, B]``.
    secret_dim:
        m, the number of columns of T; ciphertexts have ``d + m`` entries.
    max_terms:
        Largest ``Σ|a_t|`` of an integer combination ``Σ a_t·c_t`` (sums of ``n`` ciphertexts:
        ``n``) the parameters must still decrypt.
    key_switches:
        Key switches (or linear transformations with entries in {-1, 0, 1} and one non-zero per
        row, e.g. coordinate selections) a ciphertext may pass through before being combined;
        public-key encryption counts as one.

    The worst-case noise after those operations is
    ``max_terms · (B + key_switches · (d + m) · ℓ · B)``; the parameters are refused unless it
    is below ``w/2`` and ``w·(max_terms·2^(l-1)) + noise < q/2``.

    Examples
    --------
    >>> p = VHEParams(dim=2, plaintext_bits=8, ciphertext_bits=32, w=195, noise_bound=1)
    >>> p.worst_noise, p.backend
    (97, 'uint64')
    >>> VHEParams(dim=2, plaintext_bits=8, ciphertext_bits=32, w=194, noise_bound=1)
    Traceback (most recent call last):
    ...
    cipherseg.errors.ParameterError: cannot decrypt correctly: ...
    """

    dim: int
    plaintext_bits: int
    ciphertext_bits: int
    w: int
    noise_bound: int
    secret_dim: int = 1
    max_terms: int = 1
    key_switches: int = 1

    def __post_init__(self) -> None:
        for name in ("dim", "plaintext_bits", "ciphertext_bits", "w", "noise_bound",
                     "secret_dim", "max_terms", "key_switches"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ParameterError(f"{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not 1 <= self.dim <= 4096:
            raise ParameterError(f"dim must be in [1, 4096], got {self.dim}")
        if not 1 <= self.secret_dim <= 256:
            raise ParameterError(f"secret_dim must be in [1, 256], got {self.secret_dim}")
        if not 2 <= self.plaintext_bits <= MAX_CIPHERTEXT_BITS:
            raise ParameterError(f"plaintext_bits must be >= 2, got {self.plaintext_bits}")
        if not 8 <= self.ciphertext_bits <= MAX_CIPHERTEXT_BITS:
            raise ParameterError(
                f"ciphertext_bits must be in [8, {MAX_CIPHERTEXT_BITS}], got {self.ciphertext_bits}"
            )
        if self.noise_bound < 1:
            raise ParameterError(
                f"noise_bound must be >= 1, got {self.noise_bound}: without noise S·c = w·x "
                "holds exactly and the key follows from linear algebra"
            )
        if self.max_terms < 1 or self.key_switches < 0:
            raise ParameterError("max_terms must be >= 1 and key_switches >= 0")
        if self.w < 2:
            raise ParameterError(f"w must be >= 2, got {self.w}")
        noise = self.worst_noise
        if 2 * noise >= self.w:
            raise ParameterError(
                f"cannot decrypt correctly: the worst-case noise after the allowed operations is "
                f"{noise} (= max_terms {self.max_terms} × (noise_bound {self.noise_bound} + "
                f"key_switches {self.key_switches} × (d+m) {self.dim + self.secret_dim} × "
                f"{self.ciphertext_bits} bits × noise_bound)), and decryption needs "
                f"|e| < w/2 = {self.w / 2:g}; choose w >= {2 * noise + 1}, or allow fewer "
                "operations"
            )
        top = self.w * (self.max_value + 1) + noise
        if 2 * top >= self.q:
            need = (2 * top).bit_length()
            raise ParameterError(
                f"cannot decrypt correctly: w·(largest result + 1) + noise = 2^"
                f"{math.log2(top):.1f} does not fit in q/2 = 2^{self.ciphertext_bits - 1}; "
                f"choose ciphertext_bits >= {need}, a smaller w, or fewer plaintext bits"
            )

    # --- derived ---------------------------------------------------------------------------
    @property
    def q(self) -> int:
        """The modulus 2^ciphertext_bits."""
        return 1 << self.ciphertext_bits

    @property
    def backend(self) -> str:
        """``"uint64"`` (numpy, wrap-around) or ``"object"`` (exact Python integers)."""
        return "uint64" if self.ciphertext_bits <= 64 else "object"

    @property
    def max_plaintext(self) -> int:
        """Largest |x| of a fresh plaintext entry."""
        return (1 << (self.plaintext_bits - 1)) - 1

    @property
    def max_value(self) -> int:
        """Largest |x| of a result after the allowed operations."""
        return self.max_terms * self.max_plaintext

    @property
    def key_switch_noise(self) -> int:
        """Noise one key switch adds: ``(d + m) · ℓ · B``."""
        return (self.dim + self.secret_dim) * self.ciphertext_bits * self.noise_bound

    @property
    def worst_noise(self) -> int:
        """Worst-case |e| after the allowed operations."""
        return self.max_terms * (self.noise_bound + self.key_switches * self.key_switch_noise)

    # --- construction helpers -------------------------------------------------------------------
    @classmethod
    def for_workload(cls, dim: int, plaintext_bits: int, *, max_terms: int = 1,
                     key_switches: int = 1, noise_bound: int = 1, secret_dim: int = 1,
                     min_ciphertext_bits: int = 16) -> VHEParams:
        """The smallest valid parameters: w the least power of two above twice the noise, then
        the least ciphertext_bits (at least ``min_ciphertext_bits``) that holds the results.

        >>> VHEParams.for_workload(3, 12, max_terms=1000).ciphertext_bits
        41
        """
        for bits in range(max(8, min_ciphertext_bits), MAX_CIPHERTEXT_BITS + 1):
            noise = max_terms * (noise_bound + key_switches * (dim + secret_dim) * bits
                                 * noise_bound)
            w = 1 << (2 * noise).bit_length()
            top = w * (max_terms * ((1 << (plaintext_bits - 1)) - 1) + 1) + noise
            if 2 * top < (1 << bits):
                return cls(dim=dim, plaintext_bits=plaintext_bits, ciphertext_bits=bits, w=w,
                           noise_bound=noise_bound, secret_dim=secret_dim, max_terms=max_terms,
                           key_switches=key_switches)
        raise ParameterError(
            f"no ciphertext size up to {MAX_CIPHERTEXT_BITS} bits supports {plaintext_bits}-bit "
            f"plaintexts with max_terms={max_terms}"
        )

    def to_json(self) -> str:
        return json.dumps({f: getattr(self, f) for f in _PARAM_FIELDS}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VHEParams:
        try:
            data = json.loads(text)
            return cls(**{f: int(data[f]) for f in _PARAM_FIELDS})
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise ParameterError(f"malformed VHE parameters: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        """Parameters plus derived quantities, for reports (no key material)."""
        out: dict[str, Any] = {f: getattr(self, f) for f in _PARAM_FIELDS}
        out.update(backend=self.backend, worst_noise=self.worst_noise,
                   ciphertext_dim=self.dim + self.secret_dim)
        return out


_PARAM_FIELDS = ("dim", "plaintext_bits", "ciphertext_bits", "w", "noise_bound", "secret_dim",
                 "max_terms", "key_switches")


# ----------------------------------------------------------------------------------------------
# Exact arithmetic modulo 2^bits
# ----------------------------------------------------------------------------------------------
class Ring:
    """Integers modulo ``2**bits`` on numpy arrays (``uint64`` up to 64 bits, else objects).

    >>> r = Ring(8)
    >>> r.to_signed(r.from_signed(np.array([-3, 130])))
    array([  -3, -126])
    """

    __slots__ = ("_mask", "bits", "native", "q")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.q = 1 << bits
        self.native = bits <= 64
        self._mask = np.uint64(self.q - 1) if self.native else None

    @property
    def dtype(self) -> Any:
        return np.uint64 if self.native else object

    def reduce(self, a: Array) -> Array:
        if self.native:
            return a if self.bits == 64 else a & self._mask
        return np.asarray(a % self.q, dtype=object)

    def from_signed(self, x: npt.ArrayLike) -> Array:
        """Map integers (any sign, int64 or Python ints) to their residues."""
        arr = np.asarray(x)
        if self.native:
            if arr.dtype == object:
                arr = np.asarray(arr % self.q).astype(np.uint64)
            else:
                arr = arr.astype(np.int64).astype(np.uint64)
            return self.reduce(arr)
        return np.asarray(arr.astype(object) % self.q, dtype=object)

    def to_signed(self, a: Array) -> Array:
        """Centred representatives in ``[-q/2, q/2)`` (int64 when bits ≤ 64)."""
        if self.native:  # sign-extend bit (bits - 1) by an arithmetic shift
            shift = np.int64(64 - self.bits)
            return (np.asarray(a, dtype=np.uint64) << np.uint64(shift)).view(np.int64) >> shift
        return np.where(a >= self.q // 2, a - self.q, a)

    def add(self, a: Array, b: Array) -> Array:
        return self.reduce(a + b)

    def sub(self, a: Array, b: Array) -> Array:
        return self.reduce(a - b)

    def mul_scalar(self, a: Array, s: int) -> Array:
        if self.native:
            return self.reduce(a * np.uint64(s % (1 << 64)))
        return self.reduce(a * s)

    def matmul(self, a: Array, b: Array) -> Array:
        if self.native:
            return self.reduce(np.matmul(a, b))
        return self.reduce(np.matmul(a, b))

    def random(self, shape: tuple[int, ...], rng: np.random.Generator) -> Array:
        """Uniform residues."""
        if self.native:
            raw = rng.integers(0, np.iinfo(np.uint64).max, size=shape, dtype=np.uint64,
                               endpoint=True)
            return self.reduce(raw)
        out = np.zeros(shape, dtype=object)
        for j in range(-(-self.bits // 32)):
            part = rng.integers(0, 1 << 32, size=shape, dtype=np.int64).astype(object)
            out = out + (part << (32 * j))
        return self.reduce(out)

    def limbs(self, a: Array) -> npt.NDArray[np.int64]:
        """Split residues into ``_LIMB``-bit limbs: shape ``a.shape + (L,)``, least first."""
        n_limbs = -(-self.bits // _LIMB)
        if self.native:
            parts = [((a >> np.uint64(_LIMB * j)) & np.uint64(_LIMB_MASK)).astype(np.int64)
                     for j in range(n_limbs)]
        else:
            parts = [np.asarray((a >> (_LIMB * j)) & _LIMB_MASK).astype(np.int64)
                     for j in range(n_limbs)]
        return np.stack(parts, axis=-1)

    def bit_decompose(self, a: Array) -> npt.NDArray[np.uint8]:
        """``c*``: the bits of every entry of the last axis, least significant first."""
        bits: Array
        if self.native:
            shifts = np.arange(self.bits, dtype=np.uint64)
            bits = (a[..., None] >> shifts) & np.uint64(1)
        else:
            limbs = self.limbs(a)
            limb_shifts = np.arange(_LIMB, dtype=np.int64)
            bits = ((limbs[..., None] >> limb_shifts) & 1).reshape(*a.shape, -1)[..., :self.bits]
        return bits.astype(np.uint8).reshape(*a.shape[:-1], a.shape[-1] * self.bits)

    def bit_expand_key(self, s: Array) -> Array:
        """``S*``: column ``j·ℓ + b`` is ``2^b · S[:, j]`` so that ``S*·c* = S·c``."""
        rows, cols = s.shape
        out = np.empty((rows, cols, self.bits), dtype=self.dtype)
        for b in range(self.bits):
            out[:, :, b] = self.mul_scalar(s, 1 << b)
        return out.reshape(rows, cols * self.bits)

    def matmul_bits(self, bits: npt.NDArray[np.uint8], m: Array) -> Array:
        """``bits @ m.T`` for a 0/1 matrix ``bits`` (n × K) and residues ``m`` (r × K)."""
        n = bits.shape[0]
        limbs = self.limbs(m).astype(np.float64)  # (r, K, L)
        n_limbs = limbs.shape[-1]
        out = np.empty((n, m.shape[0]), dtype=self.dtype)
        for start in range(0, n, _CHUNK):
            block = bits[start:start + _CHUNK].astype(np.float64)
            acc: Array
            if self.native:
                acc = np.zeros((block.shape[0], m.shape[0]), dtype=np.uint64)
                for j in range(n_limbs):
                    part = (block @ limbs[:, :, j].T).astype(np.uint64)
                    acc = acc + (part << np.uint64(_LIMB * j))
            else:
                acc = np.zeros((block.shape[0], m.shape[0]), dtype=object)
                for j in range(n_limbs):
                    part = (block @ limbs[:, :, j].T).astype(np.int64).astype(object)
                    acc = acc + (part << (_LIMB * j))
            out[start:start + _CHUNK] = self.reduce(acc)
        return out

    # --- bytes -----------------------------------------------------------------------------
    @property
    def entry_bytes(self) -> int:
        return -(-self.bits // 8)

    def to_bytes(self, a: Array) -> bytes:
        nb = self.entry_bytes
        if self.native:
            raw = np.ascontiguousarray(a, dtype="<u8").reshape(-1).view(np.uint8)
            return raw.reshape(-1, 8)[:, :nb].tobytes()
        return b"".join(int(v).to_bytes(nb, "little") for v in a.reshape(-1))

    def from_bytes(self, data: bytes, shape: tuple[int, ...]) -> Array:
        nb = self.entry_bytes
        count = int(np.prod(shape, dtype=np.int64))
        if len(data) != nb * count:
            raise CiphertextError(f"expected {nb * count} bytes of residues, got {len(data)}")
        if self.native:
            raw = np.zeros((count, 8), dtype=np.uint8)
            raw[:, :nb] = np.frombuffer(data, dtype=np.uint8).reshape(count, nb)
            vals = raw.reshape(-1).view("<u8").astype(np.uint64)
            if self.bits < 64 and np.any(vals >> np.uint64(self.bits)):
                raise CiphertextError("a residue exceeds the modulus")
            return vals.reshape(shape)
        vals = np.array([int.from_bytes(data[i * nb:(i + 1) * nb], "little")
                         for i in range(count)], dtype=object)
        if count and max(vals) >= self.q:
            raise CiphertextError("a residue exceeds the modulus")
        return vals.reshape(shape)


# ----------------------------------------------------------------------------------------------
# Ciphertexts and key-switching matrices (public material)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, eq=False)
class VHECiphertexts:
    """A batch of VHE ciphertexts: ``data`` has shape ``(*batch, plain_dim + secret_dim)``.

    ``noise_bound`` and ``value_bound`` are worst-case bounds on |e| and |x| for every
    ciphertext of the batch; ``key_id`` names the key (random, public) they decrypt under.
    """

    data: Array
    key_id: bytes
    plain_dim: int
    noise_bound: int
    value_bound: int

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[:-1])

    def __len__(self) -> int:
        return int(self.data.shape[0]) if self.data.ndim > 1 else 1

    def select(self, index: Any) -> VHECiphertexts:
        """Ciphertexts ``data[index]`` (index over the batch axes), same bounds.

        >>> import numpy as np
        >>> c = VHECiphertexts(np.zeros((4, 3), np.uint64), b"k" * 16, 2, 1, 1)
        >>> c.select(slice(0, 2)).batch_shape
        (2,)
        """
        data = self.data[index]
        if data.ndim < 1 or data.shape[-1] != self.data.shape[-1]:
            raise CiphertextError("select() indexes the batch axes only")
        return replace(self, data=data)


@dataclass(frozen=True, slots=True, eq=False)
class KeySwitchKey:
    """``M = [S_src* − T'·A + E; A]``: switches ciphertexts under ``source`` to ``target``.

    ``g_norm`` is the largest row sum ``Σ_j |G_ij|`` of the linear transformation built in
    (1 for a plain key switch) and ``g`` the transformation itself when it is public
    (linear-transformation keys), ``None`` otherwise.
    """

    matrix: Array  # (r + m', n_src · ℓ)
    source_id: bytes
    target_id: bytes
    source_cols: int
    target_dim: int
    g_norm: int
    g: npt.NDArray[np.int64] | None = None

    @property
    def top(self) -> Array:
        return self.matrix[:self.target_dim]


# Envelope of VHE ciphertexts and key-switching matrices (cipherseg.wire, CRC-32); the bounds
# are exact integers in the JSON header, the residues one blob. 2: the cipherseg.wire envelope.
_CIPHERTEXTS = WireFormat(b"CSVH", 2, "VHE ciphertext")
_KEY = WireFormat(b"CSVH", 2, "VHE key-switching matrix")


def _header_int(header: dict[str, Any], name: str, what: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CiphertextError(f"malformed {what}: {name} must be a non-negative integer")
    return value


def _header_shape(header: dict[str, Any], name: str, what: str) -> tuple[int, ...]:
    value = header.get(name)
    if not isinstance(value, list) or not 1 <= len(value) <= 8:
        raise CiphertextError(f"malformed {what}: {name} must be a list of 1 to 8 sizes")
    return tuple(_header_int({name: v}, name, what) for v in value)


def _header_id(header: dict[str, Any], name: str, what: str) -> bytes:
    value = header.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise CiphertextError(f"malformed {what}: {name} must be 16 bytes in hex")
    return raw


class VHEContext:
    """Public VHE operations for fixed parameters: what the compute centre runs.

    >>> import numpy as np
    >>> from cipherseg.schemes.vhe_keys import VHESecretKey
    >>> params = VHEParams.for_workload(2, 10, max_terms=8)
    >>> key = VHESecretKey.generate(params, rng=np.random.default_rng(1))
    >>> ctx = VHEContext(params)
    >>> c = key.encrypt([[1, 2], [3, 4], [5, 6]])
    >>> key.decrypt(ctx.combine(c, [[1, 1, 1], [2, 0, -1]], axis=0))
    array([[ 9, 12],
           [-3, -2]])
    """

    def __init__(self, params: VHEParams) -> None:
        self.params = params
        self.ring = Ring(params.ciphertext_bits)

    # --- bound bookkeeping ------------------------------------------------------------------
    def admit(self, noise: int, value: int, what: str) -> None:
        """Refuse a result whose noise or plaintext bounds would break decryption."""
        p = self.params
        if 2 * noise >= p.w:
            raise ParameterError(
                f"{what} would leave noise up to {noise}, not below w/2 = {p.w / 2:g}: the result "
                "could decrypt wrongly. Use parameters with a larger budget "
                "(VHEParams.for_workload with a larger max_terms)"
            )
        if 2 * (p.w * (value + 1) + noise) >= p.q:
            raise ParameterError(
                f"{what} would produce plaintexts up to {value}, too large for q = "
                f"2^{p.ciphertext_bits} with w = {p.w}; use more ciphertext bits"
            )

    def _check_same_key(self, a: VHECiphertexts, b: VHECiphertexts) -> None:
        if a.key_id != b.key_id:
            raise CiphertextError("the ciphertexts are under different keys; switch keys first")

    # --- operations ---------------------------------------------------------------------------
    def add(self, a: VHECiphertexts, b: VHECiphertexts) -> VHECiphertexts:
        """Entry-wise sum of two (broadcastable) ciphertext batches."""
        self._check_same_key(a, b)
        noise, value = a.noise_bound + b.noise_bound, a.value_bound + b.value_bound
        self.admit(noise, value, "adding")
        return replace(a, data=self.ring.add(a.data, b.data), noise_bound=noise,
                       value_bound=value)

    def sub(self, a: VHECiphertexts, b: VHECiphertexts) -> VHECiphertexts:
        """Entry-wise difference."""
        self._check_same_key(a, b)
        noise, value = a.noise_bound + b.noise_bound, a.value_bound + b.value_bound
        self.admit(noise, value, "subtracting")
        return replace(a, data=self.ring.sub(a.data, b.data), noise_bound=noise,
                       value_bound=value)

    def add_plain(self, a: VHECiphertexts, x: npt.ArrayLike) -> VHECiphertexts:
        """Add a plaintext integer vector (no new noise): ``c + [w·x; 0]``."""
        xs = _as_int_array(x)
        pad = np.zeros((*xs.shape[:-1], a.data.shape[-1] - a.plain_dim), dtype=xs.dtype)
        if xs.shape[-1] != a.plain_dim:
            raise EncodingError(f"plaintext has {xs.shape[-1]} entries, expected {a.plain_dim}")
        value = a.value_bound + _max_abs(xs)
        self.admit(a.noise_bound, value, "adding a plaintext")
        plain = self.ring.mul_scalar(self.ring.from_signed(np.concatenate([xs, pad], -1)),
                                     self.params.w)
        return replace(a, data=self.ring.add(a.data, plain), value_bound=value)

    def combine(self, a: VHECiphertexts, coeffs: npt.ArrayLike, *, axis: int = -1
                ) -> VHECiphertexts:
        """Integer combinations along a batch axis ``axis`` (the last batch axis by default).

        ``out[..., j, :] = Σ_t coeffs[j, t] · a[..., t, :]``.
        """
        g = _as_int_array(coeffs)
        if g.ndim != 2:
            raise ParameterError("coeffs must be a 2-D integer matrix (outputs × inputs)")
        nb = a.data.ndim - 1
        ax = axis % nb if nb else 0
        moved = np.moveaxis(a.data, ax, -2)  # (..., t, D)
        if moved.shape[-2] != g.shape[1]:
            raise ParameterError(
                f"coeffs has {g.shape[1]} columns but the axis has {moved.shape[-2]} ciphertexts"
            )
        norm = int(np.max(np.sum(np.abs(g.astype(object)), axis=1))) if g.size else 0
        noise, value = norm * a.noise_bound, norm * a.value_bound
        self.admit(noise, value, "the integer combination")
        out = self.ring.matmul(self.ring.from_signed(g), moved)
        return replace(a, data=np.moveaxis(out, -2, ax), noise_bound=noise, value_bound=value)

    def sum_by_label(self, a: VHECiphertexts, labels: npt.ArrayLike, n_groups: int
                     ) -> tuple[VHECiphertexts, npt.NDArray[np.int64]]:
        """Per-group sums of a 1-D batch (addition only) and the group sizes."""
        lab = np.asarray(labels, dtype=np.int64)
        if a.data.ndim != 2 or lab.shape != (a.data.shape[0],):
            raise ParameterError("sum_by_label needs a 1-D batch and one label per ciphertext")
        if lab.size and (lab.min() < 0 or lab.max() >= n_groups):
            raise ParameterError(f"labels must be in [0, {n_groups})")
        counts = np.bincount(lab, minlength=n_groups).astype(np.int64)
        biggest = int(counts.max()) if counts.size else 0
        noise, value = biggest * a.noise_bound, biggest * a.value_bound
        self.admit(noise, value, f"summing {biggest} ciphertexts")
        order = np.argsort(lab, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        sums = np.zeros((n_groups, a.data.shape[1]), dtype=self.ring.dtype)
        nonempty = counts > 0
        if nonempty.any():
            reduced = np.add.reduceat(a.data[order], starts[nonempty], axis=0)
            sums[nonempty] = self.ring.reduce(reduced)
        return replace(a, data=sums, noise_bound=noise, value_bound=value), counts

    def key_switch(self, a: VHECiphertexts, key: KeySwitchKey) -> VHECiphertexts:
        """Switch ``a`` to ``key``'s target key (applying its linear transformation, if any)."""
        if a.key_id != key.source_id:
            raise CiphertextError("this key-switching matrix is for ciphertexts under another key")
        if a.data.shape[-1] != key.source_cols:
            raise CiphertextError(
                f"ciphertexts have {a.data.shape[-1]} entries, the key expects {key.source_cols}"
            )
        noise = key.g_norm * a.noise_bound + key.source_cols * self.params.ciphertext_bits \
            * self.params.noise_bound
        value = key.g_norm * a.value_bound
        self.admit(noise, value, "key switching")
        flat = a.data.reshape(-1, a.data.shape[-1])
        out = self.ring.matmul_bits(self.ring.bit_decompose(flat), key.matrix)
        return VHECiphertexts(out.reshape(*a.batch_shape, out.shape[-1]), key.target_id,
                              key.target_dim, noise, value)

    def key_switch_many(self, a: VHECiphertexts, keys: Sequence[KeySwitchKey]
                        ) -> list[VHECiphertexts]:
        """:meth:`key_switch` with several keys at once (one bit decomposition, one product).

        Used for the per-feature linear transformations of the seed-mode k-means.
        """
        if not keys:
            return []
        bounds = []
        for key in keys:
            if a.key_id != key.source_id or a.data.shape[-1] != key.source_cols:
                raise CiphertextError("a key-switching matrix does not match these ciphertexts")
            noise = key.g_norm * a.noise_bound + key.source_cols * self.params.ciphertext_bits \
                * self.params.noise_bound
            value = key.g_norm * a.value_bound
            self.admit(noise, value, "key switching")
            bounds.append((noise, value))
        flat = a.data.reshape(-1, a.data.shape[-1])
        stacked = np.concatenate([k.matrix for k in keys], axis=0)
        out = self.ring.matmul_bits(self.ring.bit_decompose(flat), stacked)
        results, row = [], 0
        for key, (noise, value) in zip(keys, bounds, strict=True):
            part = out[:, row:row + key.matrix.shape[0]]
            row += key.matrix.shape[0]
            results.append(VHECiphertexts(part.reshape(*a.batch_shape, part.shape[-1]),
                                          key.target_id, key.target_dim, noise, value))
        return results

    def public_encrypt(self, key: KeySwitchKey, x: npt.ArrayLike) -> VHECiphertexts:
        """Encrypt with the public key-switching matrix from ``I`` to ``S``: ``c = M·(w·x)*``."""
        if key.source_id != _IDENTITY_ID:
            raise ParameterError("public encryption needs the key-switching matrix from I")
        xs = _as_int_array(x)
        if xs.ndim == 1:
            xs = xs[None, :]
        if xs.shape[-1] != key.source_cols:
            raise EncodingError(f"plaintexts have {xs.shape[-1]} entries, expected "
                                f"{key.source_cols}")
        _check_plaintext(xs, self.params)
        noise = key.source_cols * self.params.ciphertext_bits * self.params.noise_bound
        self.admit(noise, self.params.max_plaintext, "public encryption")
        wx = self.ring.mul_scalar(self.ring.from_signed(xs.reshape(-1, xs.shape[-1])),
                                  self.params.w)
        out = self.ring.matmul_bits(self.ring.bit_decompose(wx), key.matrix)
        return VHECiphertexts(out.reshape(*xs.shape[:-1], out.shape[-1]), key.target_id,
                              key.target_dim, noise, self.params.max_plaintext)

    # --- serialisation -----------------------------------------------------------------------
    def ciphertexts_to_bytes(self, a: VHECiphertexts) -> bytes:
        """The envelope: bits, key id, plaintext dimension, shape and bounds; the residues."""
        return _CIPHERTEXTS.pack(
            {"kind": "ciphertexts", "bits": self.params.ciphertext_bits, "key_id": a.key_id.hex(),
             "plain_dim": a.plain_dim, "shape": list(a.data.shape),
             "noise_bound": a.noise_bound, "value_bound": a.value_bound},
            [self.ring.to_bytes(a.data)])

    def ciphertexts_from_bytes(self, data: bytes) -> VHECiphertexts:
        """Parse ciphertexts; :class:`CiphertextError` if truncated, corrupted or foreign."""
        env = self._open(_CIPHERTEXTS, data, "ciphertexts")
        h, what = env.header, _CIPHERTEXTS.what
        shape = _header_shape(h, "shape", what)
        plain_dim = _header_int(h, "plain_dim", what)
        if shape[-1] != plain_dim + self.params.secret_dim or len(env.blobs) != 1:
            raise CiphertextError("ciphertext shape does not match the parameters")
        arr = self._residues(env.blobs[0], shape)
        return VHECiphertexts(arr, _header_id(h, "key_id", what), plain_dim,
                              _header_int(h, "noise_bound", what),
                              _header_int(h, "value_bound", what))

    def key_to_bytes(self, key: KeySwitchKey) -> bytes:
        """Serialise a key-switching matrix (public material)."""
        g = key.g if key.g is not None else np.zeros((0, 0), dtype=np.int64)
        return _KEY.pack(
            {"kind": "key-switching matrix", "bits": self.params.ciphertext_bits,
             "source_id": key.source_id.hex(), "target_id": key.target_id.hex(),
             "source_cols": key.source_cols, "target_dim": key.target_dim,
             "shape": list(key.matrix.shape), "g_norm": key.g_norm, "g_shape": list(g.shape)},
            [self.ring.to_bytes(key.matrix), np.ascontiguousarray(g, dtype="<i8").tobytes()])

    def key_from_bytes(self, data: bytes) -> KeySwitchKey:
        env = self._open(_KEY, data, "key-switching matrix")
        h, what = env.header, _KEY.what
        cols = _header_int(h, "source_cols", what)
        shape = _header_shape(h, "shape", what)
        g_shape = _header_shape(h, "g_shape", what)
        if (len(shape) != 2 or shape[1] != cols * self.params.ciphertext_bits
                or len(g_shape) != 2 or len(env.blobs) != 2):
            raise CiphertextError("key-switching matrix shape does not match the parameters")
        matrix = self._residues(env.blobs[0], shape)
        if len(env.blobs[1]) != 8 * g_shape[0] * g_shape[1]:
            raise CiphertextError(f"malformed {what}: g does not have shape {g_shape}")
        g = np.frombuffer(env.blobs[1], dtype="<i8").astype(np.int64).reshape(g_shape)
        return KeySwitchKey(matrix, _header_id(h, "source_id", what),
                            _header_id(h, "target_id", what), cols,
                            _header_int(h, "target_dim", what), _header_int(h, "g_norm", what),
                            g if g_shape[0] else None)

    def _open(self, fmt: WireFormat, data: bytes, kind: str) -> Envelope:
        """The checked envelope of a ``kind`` object made for these parameters' modulus."""
        env = fmt.unpack(data, kind=kind)
        bits = _header_int(env.header, "bits", fmt.what)
        if bits != self.params.ciphertext_bits:
            raise CiphertextError(f"{fmt.what} is modulo 2^{bits}, these parameters use "
                                  f"2^{self.params.ciphertext_bits}")
        return env

    def _residues(self, blob: bytes, shape: tuple[int, ...]) -> Array:
        if math.prod(shape) * self.ring.entry_bytes != len(blob):
            raise CiphertextError(f"expected residues of shape {shape}, got {len(blob)} bytes")
        return self.ring.from_bytes(blob, shape)


_IDENTITY_ID = b"\x00" * 16  # the "key" I under which w·x is a noiseless ciphertext


def _as_int_array(x: npt.ArrayLike) -> Array:
    arr = np.asarray(x)
    if arr.dtype == object:
        if not all(isinstance(v, (int, np.integer)) for v in arr.reshape(-1)):
            raise EncodingError("VHE plaintexts must be integers")
        return arr
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.rint(arr)):
            raise EncodingError(
                "VHE encrypts integers; encode rationals first (cipherseg.encoding."
                "FixedPointEncoder) — got non-integer values"
            )
        if arr.size and np.max(np.abs(arr)) >= 2.0**62:
            raise EncodingError("value too large for exact integer conversion")
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    raise EncodingError(f"VHE plaintexts must be integers, got dtype {arr.dtype}")


def _max_abs(x: Array) -> int:
    if x.size == 0:
        return 0
    if x.dtype == object:
        return int(max(abs(int(v)) for v in x.reshape(-1)))
    return int(np.max(np.abs(x.astype(object))))


def _check_plaintext(x: Array, params: VHEParams) -> None:
    biggest = _max_abs(x)
    if biggest > params.max_plaintext:
        raise EncodingError(
            f"plaintext entry {biggest} needs more than plaintext_bits={params.plaintext_bits} "
            f"(|x| <= {params.max_plaintext}); raise plaintext_bits or encode with fewer "
            "decimals"
        )


def stack(parts: Sequence[VHECiphertexts]) -> VHECiphertexts:
    """Stack equally shaped ciphertext batches under one key along a new first axis."""
    if not parts:
        raise ParameterError("nothing to stack")
    first = parts[0]
    if any(p.key_id != first.key_id for p in parts):
        raise CiphertextError("cannot stack ciphertexts under different keys")
    return VHECiphertexts(np.stack([p.data for p in parts]), first.key_id, first.plain_dim,
                          max(p.noise_bound for p in parts), max(p.value_bound for p in parts))
