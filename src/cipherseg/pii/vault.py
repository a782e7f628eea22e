"""AES-256-GCM encryption of personal fields and keyed pseudonyms (HMAC-SHA256).

Ciphertext layout (``bytes``): ``0x01 | len(key_id) | key_id | nonce(12) | ciphertext+tag``.
The associated data binds each ciphertext to its field name and to a context (the
customer's pseudonym), so a ciphertext copied to another customer's row or another column
fails to decrypt instead of showing the wrong person's number.

Pseudonyms are HMAC-SHA256 under a separate key, truncated to 128 bits, hex: stable join keys
that reveal nothing without the key (equal inputs give equal pseudonyms, by design).

>>> from cipherseg.pii.keys import PiiKeyring
>>> vault = PiiVault(PiiKeyring.generate())
>>> ct = vault.encrypt("phone", "+8613812345678", context="c1")
>>> vault.decrypt("phone", ct, context="c1")
'+8613812345678'
>>> len(vault.pseudonym("customer", "owner1/C0001"))
32
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipherseg.errors import CiphertextError, KeyCustodyError
from cipherseg.pii.keys import PiiKeyring

FORMAT_VERSION = 1
_NONCE = 12


class PiiVault:
    """Encrypts and decrypts personal fields with a :class:`PiiKeyring`.

    >>> from cipherseg.pii.keys import PiiKeyring
    >>> vault = PiiVault(PiiKeyring.generate())
    >>> vault.key_id_of(vault.encrypt("phone", "x", context="c")) == vault.keyring.active_id
    True
    """

    def __init__(self, keyring: PiiKeyring) -> None:
        self.keyring = keyring
        self._aead = {kid: AESGCM(key) for kid, key in keyring.data_keys.items()}

    def __repr__(self) -> str:
        return f"PiiVault({self.keyring!r})"

    @staticmethod
    def _aad(field: str, context: str) -> bytes:
        return f"cipherseg-pii/v{FORMAT_VERSION}/{field}/{context}".encode()

    def encrypt(self, field: str, value: str, *, context: str) -> bytes:
        """Encrypt ``value`` of ``field`` for the record identified by ``context``."""
        kid = self.keyring.active_id
        nonce = os.urandom(_NONCE)
        body = self._aead[kid].encrypt(nonce, value.encode("utf-8"), self._aad(field, context))
        kid_b = kid.encode("ascii")
        return bytes([FORMAT_VERSION, len(kid_b)]) + kid_b + nonce + body

    def key_id_of(self, blob: bytes) -> str:
        """The id of the data key a ciphertext was made with."""
        if len(blob) < 2 or blob[0] != FORMAT_VERSION:
            raise CiphertextError("not a cipherseg PII ciphertext (unknown format version); "
                                  "was the column written by another program?")
        n = blob[1]
        if len(blob) < 2 + n + _NONCE + 16:
            raise CiphertextError("PII ciphertext is truncated; restore the row from backup")
        return blob[2:2 + n].decode("ascii", errors="replace")

    def decrypt(self, field: str, blob: bytes, *, context: str) -> str:
        """Decrypt a ciphertext made by :meth:`encrypt` with the same field and context."""
        kid = self.key_id_of(blob)
        aead = self._aead.get(kid)
        if aead is None:
            raise KeyCustodyError(f"PII key {kid!r} is not in the keyring (retired too early?);"
                                  " restore the keyring that still holds it")
        start = 2 + blob[1]
        try:
            plain = aead.decrypt(blob[start:start + _NONCE], blob[start + _NONCE:],
                                 self._aad(field, context))
        except InvalidTag as exc:
            raise CiphertextError(f"PII ciphertext for {field!r} failed authentication: it was "
                                  "tampered with or belongs to another record") from exc
        return plain.decode("utf-8")

    def reencrypt(self, field: str, blob: bytes, *, context: str) -> bytes:
        """Re-encrypt under the active key (no-op copy if already under it)."""
        if self.key_id_of(blob) == self.keyring.active_id:
            return blob
        return self.encrypt(field, self.decrypt(field, blob, context=context), context=context)

    def pseudonym(self, namespace: str, value: str) -> str:
        """Keyed pseudonym of ``value`` in ``namespace`` (32 hex digits).

        >>> from cipherseg.pii.keys import PiiKeyring
        >>> v = PiiVault(PiiKeyring.generate())
        >>> v.pseudonym("phone", "+8613812345678") == v.pseudonym("phone", "+8613812345678")
        True
        >>> v.pseudonym("phone", "1") == v.pseudonym("customer", "1")
        False
        """
        msg = namespace.encode("utf-8") + b"\x00" + value.encode("utf-8")
        return hmac.new(self.keyring.pseudonym_key, msg, hashlib.sha256).hexdigest()[:32]
