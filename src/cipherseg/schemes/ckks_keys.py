"""The key holder's side of CKKS: key generation, encryption, decryption.

Only the data owner constructs a :class:`CkksSecretContext`. It exports a public context (no
secret key) for the compute centre with :meth:`CkksSecretContext.public_bytes`. Uploads are
encrypted symmetrically with the secret key and saved in SEAL's *seeded* form, which halves
their size on the wire (the second component is regenerated from a seed on load).

>>> import numpy as np
>>> from cipherseg.schemes.ckks import CkksParams
>>> owner = CkksSecretContext.generate(CkksParams.for_depth(1))
>>> ct = owner.ciphertext_from_bytes(owner.encrypt_to_bytes(np.array([1.5, -2.0])))
>>> np.round(owner.decrypt(ct, 2), 6)
array([ 1.5, -2. ])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from cipherseg.schemes._seal_io import seal_from_bytes, seal_to_bytes
from cipherseg.schemes.ckks import (
    CkksContextBase,
    CkksParams,
    context_fingerprint,
    pack_context_bytes,
    power_of_two_galois_elements,
)


class CkksSecretContext(CkksContextBase):
    """Keys and operations of the CKKS key holder (the data owner)."""

    name = "ckks"

    def __init__(self, params: CkksParams, secret_key: Any, public_key: Any, relin_keys: Any,
                 public_key_blob: bytes, relin_keys_blob: bytes | None = None) -> None:
        super().__init__(params, context_fingerprint(params, public_key_blob))
        self._secret_key = secret_key
        self.public_key = public_key
        self.relin_keys = relin_keys
        self._public_key_blob = public_key_blob
        self._relin_blob = relin_keys_blob
        self._encryptor = seal.Encryptor(self.seal_context, public_key, secret_key)
        self._decryptor = seal.Decryptor(self.seal_context, secret_key)
        self._galois_blob: bytes | None = None

    def __repr__(self) -> str:  # never show key material
        return f"CkksSecretContext(params={self.params}, fingerprint={self.fingerprint.hex()[:12]})"

    @classmethod
    def generate(cls, params: CkksParams | None = None) -> CkksSecretContext:
        """Generate a fresh key set (secret, public, relinearisation keys). The public and
        relinearisation keys are exported in SEAL's seeded form (their uniform halves
        regenerated from a seed on load: half the bytes)."""
        params = params or CkksParams()
        ctx = params.seal_context()
        keygen = seal.KeyGenerator(ctx)
        sk = keygen.secret_key()
        # A public key is an encryption of zero under the secret key at the key level: SEAL's
        # KeyGenerator builds it exactly so (encrypt_zero_symmetric, NTT form); TenSEAL binds
        # only the unseeded form, so we make the seeded one the same way.
        pk_blob = seal_to_bytes(seal.Encryptor(ctx, sk).encrypt_zero_symmetric(ctx.key_parms_id()))
        rk_blob = seal_to_bytes(keygen.create_relin_keys())
        pk = seal_from_bytes(seal.PublicKey(), ctx, pk_blob)
        rk = seal_from_bytes(seal.RelinKeys(), ctx, rk_blob)
        return cls(params, sk, pk, rk, pk_blob, rk_blob)

    def is_private(self) -> bool:
        return True

    def public_bytes(self, *, with_relin: bool = True, with_galois: bool = False) -> bytes:
        """The context the compute centre may hold: parameters, public and relinearisation keys,
        and with ``with_galois`` the power-of-two rotation keys (seeded form, made once).
        ``with_relin=False``: parameters and public key only (a party that only encrypts)."""
        fields = {
            "params": self.params.to_json().encode(),
            "public_key": self._public_key_blob,
        }
        if with_relin:
            fields["relin_keys"] = self._relin_blob if self._relin_blob is not None else \
                seal_to_bytes(self.relin_keys)
        if with_galois:
            if self._galois_blob is None:
                keygen = seal.KeyGenerator(self.seal_context, self._secret_key)
                self._galois_blob = seal_to_bytes(
                    keygen.create_galois_keys(power_of_two_galois_elements(self.params)))
            fields["galois_keys"] = self._galois_blob
        return pack_context_bytes(fields)

    # --- encryption ----------------------------------------------------------------------
    def encrypt(self, values: npt.ArrayLike, *, at_last_level: bool = False,
                scale: float | None = None) -> Any:
        """Encrypt with the secret key into a ciphertext object (kept in this process)."""
        pid = self.last_parms_id if at_last_level else self.top_parms_id
        out = seal.Ciphertext()
        self._encryptor.encrypt_symmetric(self.encode(values, scale=scale, parms_id=pid), out)
        return out

    def encrypt_to_bytes(self, values: npt.ArrayLike, *, at_last_level: bool = False,
                         scale: float | None = None, level: int | None = None) -> bytes:
        """Encrypt and serialise in seeded form (about half the size of a full ciphertext);
        ``level`` counts primes dropped from the top (0: fresh, as ``at_last_level=False``)."""
        pid = self.last_parms_id if at_last_level else self.top_parms_id
        if level is not None:
            pid = self.level_parms_ids[level]
        serializable = self._encryptor.encrypt_symmetric(
            self.encode(values, scale=scale, parms_id=pid)
        )
        return self.wrap_blob(seal_to_bytes(serializable))

    # --- decryption ----------------------------------------------------------------------
    def decrypt(self, ct: Any, size: int | None = None) -> npt.NDArray[np.float64]:
        """Decrypt and decode; ``size`` keeps only the first ``size`` slots."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        values = np.asarray(self.encoder.decode_double(pt), dtype=np.float64)
        return values if size is None else values[:size]

    def decrypt_complex(self, ct: Any, size: int | None = None) -> npt.NDArray[np.complex128]:
        """Decrypt and decode the complex slots (two real vectors packed as re + i·im)."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(ct, pt)
        values = np.asarray(self.encoder.decode_complex(pt), dtype=np.complex128)
        return values if size is None else values[:size]

    def decrypt_bytes(self, data: bytes, size: int | None = None) -> npt.NDArray[np.float64]:
        return self.decrypt(self.ciphertext_from_bytes(data), size)
