"""CKKS through TenSEAL's SEAL bindings: parameters, the public (centre-side) context, ciphertexts.

This module holds nothing that can decrypt. The key holder's side — key generation,
encryption with the secret key, decryption — lives in :mod:`cipherseg.schemes.ckks_keys`,
which the compute centre cannot import (import-linter contract).

Ciphertexts and contexts travel as bytes in the envelope of :mod:`cipherseg.wire` (magic
``CSCK``, format version 2, CRC-32)::

    ciphertext: header {"kind": "ciphertext", "fingerprint": hex of 16 bytes} | SEAL blob
    context:    header {"kind": "context", "fields": [names]} | one blob per named field

The fingerprint binds a ciphertext to the key set it was made under; the CRC-32 catches
truncation and accidental corruption (every single-bit change, every burst up to 32 bits).
Neither authenticates the sender: against an active network attacker the transport must be
authenticated (TLS); the compute centre is honest-but-curious.

>>> params = CkksParams.for_depth(1)
>>> params.coeff_mod_bit_sizes
(60, 40, 60)
>>> params.slot_count
4096
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from cipherseg.errors import CiphertextError, KeyCustodyError, ParameterError
from cipherseg.schemes._seal_io import seal_from_bytes, seal_to_bytes
from cipherseg.schemes.he_standard import HE_STANDARD_MAX_LOG_Q
from cipherseg.wire import WireFormat

Ciphertext = seal.Ciphertext

_CIPHERTEXT = WireFormat(b"CSCK", 2, "CKKS ciphertext")
_CONTEXT = WireFormat(b"CSCK", 2, "CKKS context")
_FP_LEN = 16


@dataclass(frozen=True, slots=True)
class CkksParams:
    """CKKS parameters: ring degree, modulus chain and scale, checked against 128-bit security.

    Parameters
    ----------
    poly_modulus_degree:
        Ring degree N (a power of two); N/2 slots per ciphertext.
    coeff_mod_bit_sizes:
        Bit sizes of the modulus chain primes: first (decryption), middle (one per level of
        multiplicative depth), last (special prime for key switching).
    scale_bits:
        log2 of the encoding scale; must equal the middle primes' size.

    Examples
    --------
    >>> CkksParams(8192, (60, 40, 40, 60), 40).depth
    2
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in HE_STANDARD_MAX_LOG_Q[128] or n < 4096:
            raise ParameterError(
                f"poly_modulus_degree must be one of 4096, 8192, 16384, 32768; got {n}"
            )
        bits = tuple(int(b) for b in self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if len(bits) < 2:
            raise ParameterError("the modulus chain needs at least two primes (data + special)")
        if any(b < 20 or b > 60 for b in bits):
            raise ParameterError(f"every prime must have 20..60 bits, got {bits}")
        total = sum(bits)
        bound = HE_STANDARD_MAX_LOG_Q[128][n]
        if total > bound:
            raise ParameterError(
                f"log2(q) = {total} exceeds the HE-standard 128-bit bound {bound} for N={n}; "
                "use fewer or smaller primes, or a larger N"
            )
        # A middle prime larger than the scale lowers the scale after its rescale (protocol
        # 4.5 rescales its products by a 50-bit prime to 2^30, leaving room for blinding).
        for middle in bits[1:-1]:
            if middle < self.scale_bits:
                raise ParameterError(
                    f"middle primes must have scale_bits={self.scale_bits} bits or more, "
                    f"got {bits}"
                )
        if bits[0] <= self.scale_bits:
            raise ParameterError(
                "the first prime must be larger than the scale to leave room for the integer "
                f"part (got first={bits[0]}, scale_bits={self.scale_bits})"
            )

    @classmethod
    def for_depth(cls, depth: int, poly_modulus_degree: int = 8192, scale_bits: int = 40
                  ) -> CkksParams:
        """The smallest chain for ``depth`` multiplications: [60] + [scale_bits]*depth + [60]."""
        if depth < 0:
            raise ParameterError(f"depth must be >= 0, got {depth}")
        return cls(poly_modulus_degree, (60, *([scale_bits] * depth), 60), scale_bits)

    @property
    def depth(self) -> int:
        return len(self.coeff_mod_bit_sizes) - 2

    @property
    def slot_count(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def headroom_bits(self) -> int:
        """Bits left for the integer part of a value at the last level (sign excluded)."""
        return self.coeff_mod_bit_sizes[0] - self.scale_bits - 1

    def to_json(self) -> str:
        return json.dumps({"N": self.poly_modulus_degree, "q": list(self.coeff_mod_bit_sizes),
                           "scale_bits": self.scale_bits}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CkksParams:
        try:
            d = json.loads(text)
            return cls(int(d["N"]), tuple(int(b) for b in d["q"]), int(d["scale_bits"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"malformed CKKS parameters: {exc}") from exc

    def seal_context(self) -> Any:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(self.poly_modulus_degree)
        parms.set_coeff_modulus(
            seal.CoeffModulus.Create(self.poly_modulus_degree, list(self.coeff_mod_bit_sizes))
        )
        return seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)


class CkksContextBase:
    """What both parties share: parameters, encoder, evaluator, ciphertext (de)serialisation."""

    def __init__(self, params: CkksParams, fingerprint: bytes) -> None:
        self.params = params
        self.fingerprint = fingerprint
        self.seal_context = params.seal_context()
        self.encoder = seal.CKKSEncoder(self.seal_context)
        self.evaluator = seal.Evaluator(self.seal_context)
        data = self.seal_context.first_context_data()
        self.top_parms_id = data.parms_id()
        chain = [data]
        while data.next_context_data() is not None:
            data = data.next_context_data()
            chain.append(data)
        self.last_parms_id = chain[-1].parms_id()
        #: parms_id of each level, from the top (fresh ciphertexts) to the last.
        self.level_parms_ids = [c.parms_id() for c in chain]
        primes = [m.value() for m in chain[0].parms().coeff_modulus()]
        # Scale of a product of two fresh ciphertexts after one rescale: exact, shared by both
        # sides, so values encrypted at the last level can be added to rescaled products.
        self.rescaled_scale = params.scale * params.scale / float(primes[-1])

    # --- ciphertext envelope -------------------------------------------------------------
    def ciphertext_to_bytes(self, ct: Any) -> bytes:
        return self.wrap_blob(seal_to_bytes(ct))

    def wrap_blob(self, blob: bytes) -> bytes:
        return _CIPHERTEXT.pack({"kind": "ciphertext", "fingerprint": self.fingerprint.hex()},
                                [blob])

    def ciphertext_from_bytes(self, data: bytes) -> Any:
        envelope = _CIPHERTEXT.unpack(data, kind="ciphertext")
        fingerprint = envelope.header.get("fingerprint")
        if fingerprint != self.fingerprint.hex():
            shown = fingerprint[:12] if isinstance(fingerprint, str) else repr(fingerprint)
            raise CiphertextError(
                f"ciphertext was made under another key set (context fingerprint {shown}… ≠ "
                f"{self.fingerprint.hex()[:12]}…); re-encrypt it with this session's keys"
            )
        if len(envelope.blobs) != 1:
            raise CiphertextError(f"a CKKS ciphertext has one SEAL blob, got "
                                  f"{len(envelope.blobs)}")
        try:
            return seal_from_bytes(seal.Ciphertext(), self.seal_context, envelope.blobs[0])
        except Exception as exc:  # SEAL raises ValueError/RuntimeError/... on invalid data
            raise CiphertextError(f"ciphertext rejected by SEAL: {exc}") from exc

    # --- evaluation (no key needed) -----------------------------------------------------
    def add(self, a: Any, b: Any) -> Any:
        out = seal.Ciphertext()
        self.evaluator.add(a, b, out)
        return out

    def add_inplace(self, a: Any, b: Any) -> None:
        self.evaluator.add_inplace(a, b)

    def sub(self, a: Any, b: Any) -> Any:
        out = seal.Ciphertext()
        self.evaluator.sub(a, b, out)
        return out

    def multiply(self, a: Any, b: Any) -> Any:
        """ct×ct without relinearisation (result has three components)."""
        out = seal.Ciphertext()
        self.evaluator.multiply(a, b, out)
        return out

    def square(self, a: Any) -> Any:
        out = seal.Ciphertext()
        self.evaluator.square(a, out)
        return out

    def rescale(self, a: Any) -> Any:
        out = seal.Ciphertext()
        self.evaluator.rescale_to_next(a, out)
        return out

    def mod_switch_to_next(self, a: Any) -> Any:
        """Drop one prime without rescaling (the value and scale stay)."""
        out = seal.Ciphertext()
        self.evaluator.mod_switch_to_next(a, out)
        return out

    def mod_switch_to_last(self, a: Any) -> Any:
        out = seal.Ciphertext()
        self.evaluator.mod_switch_to(a, self.last_parms_id, out)
        return out

    def encode(self, values: npt.ArrayLike, *, scale: float | None = None,
               parms_id: Any = None) -> Any:
        """Encode a vector (or a scalar broadcast to all slots), real or complex, as a CKKS
        plaintext."""
        pt = seal.Plaintext()
        pid = self.top_parms_id if parms_id is None else parms_id
        sc = self.params.scale if scale is None else scale
        arr = np.asarray(values)
        # Complex slots carry two real vectors (real and imaginary parts) at once.
        arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64)
        if arr.ndim == 0:
            self.encoder.encode(complex(arr) if np.iscomplexobj(arr) else float(arr), pid, sc,
                                pt)
        else:
            if arr.size > self.params.slot_count:
                raise ParameterError(
                    f"{arr.size} values exceed the {self.params.slot_count} slots of a ciphertext"
                )
            self.encoder.encode(arr.tolist(), pid, sc, pt)
        return pt

    def multiply_integer(self, a: Any, factor: int) -> Any:
        """Multiply by an integer constant without consuming a level (scale unchanged)."""
        pt = seal.Plaintext()
        self.encoder.encode(float(int(factor)), a.parms_id(), 1.0, pt)
        out = seal.Ciphertext()
        self.evaluator.multiply_plain(a, pt, out)
        return out

    def add_plain(self, a: Any, values: npt.ArrayLike) -> Any:
        pt = self.encode(values, scale=a.scale, parms_id=a.parms_id())
        out = seal.Ciphertext()
        self.evaluator.add_plain(a, pt, out)
        return out

    def sub_plain(self, a: Any, values: npt.ArrayLike) -> Any:
        pt = self.encode(values, scale=a.scale, parms_id=a.parms_id())
        out = seal.Ciphertext()
        self.evaluator.sub_plain(a, pt, out)
        return out

    def multiply_plain(self, a: Any, values: npt.ArrayLike) -> Any:
        """ct×pt at the scale of the parameters (consumes a level after rescale)."""
        pt = self.encode(values, parms_id=a.parms_id())
        out = seal.Ciphertext()
        self.evaluator.multiply_plain(a, pt, out)
        return out

    def mul_plain(self, a: Any, plain: npt.ArrayLike) -> Any:
        """ct×pt, rescaled."""
        return self.rescale(self.multiply_plain(a, plain))


class CkksPublicContext(CkksContextBase):
    """The compute centre's context: parameters, public key and (unless exported without them)
    relinearisation keys only.

    Built from the bytes the key holder exports; it refuses bytes that carry a secret key.

    Examples
    --------
    >>> from cipherseg.schemes.ckks_keys import CkksSecretContext
    >>> owner = CkksSecretContext.generate(CkksParams.for_depth(1))
    >>> centre = CkksPublicContext.from_bytes(owner.public_bytes())
    >>> centre.is_private()
    False
    """

    def __init__(self, params: CkksParams, fingerprint: bytes, public_key: Any,
                 relin_keys: Any = None, galois_keys: Any = None) -> None:
        super().__init__(params, fingerprint)
        self.public_key = public_key
        self.relin_keys = relin_keys
        self.galois_keys = galois_keys
        self._encryptor = seal.Encryptor(self.seal_context, public_key)

    def is_private(self) -> bool:
        """Always False: this context cannot decrypt."""
        return False

    @classmethod
    def from_bytes(cls, data: bytes) -> CkksPublicContext:
        fields = unpack_context_bytes(data)
        if fields.get("secret_key"):
            raise KeyCustodyError(
                "these context bytes include a secret key; the compute centre accepts only a "
                "public context (export it with CkksSecretContext.public_bytes())"
            )
        params = CkksParams.from_json(fields["params"].decode())
        ctx = params.seal_context()
        try:
            pk = seal_from_bytes(seal.PublicKey(), ctx, fields["public_key"])
            rk = seal_from_bytes(seal.RelinKeys(), ctx, fields["relin_keys"]) \
                if fields.get("relin_keys") else None
        except Exception as exc:
            raise CiphertextError(f"public context keys rejected by SEAL: {exc}") from exc
        gk = None
        if fields.get("galois_keys"):
            try:
                gk = seal_from_bytes(seal.GaloisKeys(), ctx, fields["galois_keys"])
            except Exception as exc:
                raise CiphertextError(f"rotation keys rejected by SEAL: {exc}") from exc
        fingerprint = context_fingerprint(params, fields["public_key"])
        return cls(params, fingerprint, pk, rk, gk)

    def relinearize(self, a: Any) -> Any:
        if self.relin_keys is None:
            raise KeyCustodyError("this public context carries no relinearisation keys; the key "
                                  "holder exports them with public_bytes(with_relin=True)")
        out = seal.Ciphertext()
        self.evaluator.relinearize(a, self.relin_keys, out)
        return out

    def encrypt_public(self, values: npt.ArrayLike) -> Any:
        """Encrypt with the public key (anyone may; only the key holder can decrypt)."""
        out = seal.Ciphertext()
        self._encryptor.encrypt(self.encode(values), out)
        return out

    def sum_slots(self, a: Any) -> Any:
        """Every slot of the result holds the sum of all slots of ``a`` (rotate and add with
        the power-of-two rotation keys of :func:`power_of_two_galois_elements`)."""
        if self.galois_keys is None:
            raise KeyCustodyError("this public context carries no rotation keys; the key "
                                  "holder exports them with public_bytes(with_galois=True)")
        acc = a
        step = 1
        while step < self.params.slot_count:
            rotated = seal.Ciphertext()
            self.evaluator.rotate_vector(acc, step, self.galois_keys, rotated)
            acc = self.add(acc, rotated)
            step *= 2
        return acc


def power_of_two_galois_elements(params: CkksParams) -> list[int]:
    """SEAL Galois elements of the left rotations by 1, 2, 4, …, slots/2 (3^step mod 2N)."""
    m = 2 * params.poly_modulus_degree
    return [pow(3, 1 << i, m) for i in range(params.slot_count.bit_length() - 1)]


def context_fingerprint(params: CkksParams, public_key_blob: bytes) -> bytes:
    """16 bytes naming a key set: parameters and public key."""
    h = hashlib.blake2b(digest_size=_FP_LEN)
    h.update(params.to_json().encode())
    h.update(public_key_blob)
    return h.digest()


def pack_context_bytes(fields: dict[str, bytes]) -> bytes:
    """Named byte fields in a context envelope (public or secret contexts)."""
    names = sorted(fields)
    return _CONTEXT.pack({"kind": "context", "fields": names}, [fields[n] for n in names])


def unpack_context_bytes(data: bytes) -> dict[str, bytes]:
    envelope = _CONTEXT.unpack(data, kind="context")
    names = envelope.header.get("fields")
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names) or len(names) != len(envelope.blobs)):
        raise CiphertextError("malformed context bytes: the field names do not match its blobs")
    fields = dict(zip(names, envelope.blobs, strict=True))
    for required in ("params", "public_key"):
        if required not in fields:
            raise CiphertextError(f"context bytes lack the {required!r} field")
    return fields
