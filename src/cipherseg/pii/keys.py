"""The PII keyring: AES-256-GCM data keys (rotatable) and one HMAC pseudonym key.

The keyring lives in a JSON file written with mode 0600 (or comes from configuration as the
same JSON, base64-encoded). Several data keys can be present at once: one is *active* (new
ciphertexts), the others only decrypt until :func:`rotate` has re-encrypted everything and
:meth:`PiiKeyring.retire_inactive` drops them. The pseudonym key is not rotated with the data
keys: pseudonyms are join keys and changing it would break every stored reference.

>>> ring = PiiKeyring.generate()
>>> ring2 = ring.with_new_active_key()
>>> ring2.active_id != ring.active_id and ring.active_id in ring2.data_keys
True
>>> PiiKeyring.from_json(ring2.to_json()) == ring2
True
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cipherseg.errors import KeyCustodyError, ParameterError

KEYRING_VERSION = 1
_KEY_BYTES = 32


def _new_key_id() -> str:
    return "k" + secrets.token_hex(4)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise KeyCustodyError(f"the PII keyring's {what} is not valid base64; restore the "
                              "keyring file from backup") from exc
    if len(raw) != _KEY_BYTES:
        raise KeyCustodyError(f"the PII keyring's {what} must be {_KEY_BYTES} bytes, got "
                              f"{len(raw)}; restore the keyring file from backup")
    return raw


@dataclass(frozen=True)
class PiiKeyring:
    """Data keys by id, the id of the active one, and the pseudonym (HMAC) key.

    ``repr`` never shows key bytes.

    >>> ring = PiiKeyring.generate()
    >>> "data_keys" in repr(ring) and ring.active_id in repr(ring)
    True
    >>> any(_b64(k) in repr(ring) for k in ring.data_keys.values())
    False
    """

    active_id: str
    data_keys: dict[str, bytes] = field(repr=False)
    pseudonym_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.active_id not in self.data_keys:
            raise KeyCustodyError(f"the active PII key {self.active_id!r} is missing from the "
                                  "keyring; restore the keyring file from backup")
        for key in (*self.data_keys.values(), self.pseudonym_key):
            if len(key) != _KEY_BYTES:
                raise KeyCustodyError(f"PII keys must be {_KEY_BYTES} bytes")

    def __repr__(self) -> str:  # keys never appear, whatever dataclass would do
        return (f"PiiKeyring(active_id={self.active_id!r}, "
                f"data_keys=<{len(self.data_keys)} keys: {sorted(self.data_keys)}>)")

    @classmethod
    def generate(cls) -> PiiKeyring:
        """A fresh keyring with one random data key and a random pseudonym key."""
        kid = _new_key_id()
        return cls(kid, {kid: secrets.token_bytes(_KEY_BYTES)}, secrets.token_bytes(_KEY_BYTES))

    def with_new_active_key(self) -> PiiKeyring:
        """A copy with a new random data key made active; the old keys still decrypt."""
        kid = _new_key_id()
        while kid in self.data_keys:
            kid = _new_key_id()
        keys = dict(self.data_keys)
        keys[kid] = secrets.token_bytes(_KEY_BYTES)
        return PiiKeyring(kid, keys, self.pseudonym_key)

    def retire_inactive(self) -> PiiKeyring:
        """A copy holding only the active data key (call once nothing uses the others)."""
        return PiiKeyring(self.active_id, {self.active_id: self.data_keys[self.active_id]},
                          self.pseudonym_key)

    def to_json(self) -> str:
        """Serialise (contains secret keys: write it only to a 0600 file or a secret store)."""
        return json.dumps({
            "version": KEYRING_VERSION,
            "active": self.active_id,
            "data_keys": {k: _b64(v) for k, v in sorted(self.data_keys.items())},
            "pseudonym_key": _b64(self.pseudonym_key),
        })

    @classmethod
    def from_json(cls, text: str) -> PiiKeyring:
        """Load a keyring serialised by :meth:`to_json`; refuse unknown versions."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyCustodyError("the PII keyring is not valid JSON; restore it from "
                                  "backup") from exc
        if not isinstance(doc, dict) or doc.get("version") != KEYRING_VERSION:
            raise KeyCustodyError(f"unknown PII keyring version "
                                  f"{doc.get('version') if isinstance(doc, dict) else None!r};"
                                  f" this cipherseg reads version {KEYRING_VERSION}")
        try:
            keys = {str(k): _unb64(v, f"data key {k}") for k, v in doc["data_keys"].items()}
            return cls(str(doc["active"]), keys, _unb64(doc["pseudonym_key"], "pseudonym key"))
        except (KeyError, AttributeError, TypeError) as exc:
            raise KeyCustodyError("the PII keyring misses 'active', 'data_keys' or "
                                  "'pseudonym_key'; restore it from backup") from exc


def write_secret_file(path: Path, text: str) -> None:
    """Atomically write ``text`` to ``path`` with mode 0600 (the directory is made 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_or_create_keyring(path: Path) -> PiiKeyring:
    """Read the keyring file, creating it (0600) with fresh keys if it does not exist.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "pii.keyring"
    >>> load_or_create_keyring(p) == load_or_create_keyring(p)
    True
    >>> oct(p.stat().st_mode & 0o777)
    '0o600'
    """
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyCustodyError(f"the PII keyring {path} is readable by other users (mode "
                                  f"{oct(mode)}); run `chmod 600 {path}`")
        return PiiKeyring.from_json(path.read_text(encoding="utf-8"))
    ring = PiiKeyring.generate()
    write_secret_file(path, ring.to_json())
    return ring


def keyring_from_setting(value: str) -> PiiKeyring:
    """A keyring from a configuration value: its JSON, base64-encoded JSON, or a raw key.

    A raw 32-byte key (base64 or 64 hex digits) becomes a keyring whose data key id is ``k0``
    and whose pseudonym key is derived from it (HKDF, distinct label), so a single secret in a
    KMS is enough.

    >>> ring = keyring_from_setting("00" * 32)
    >>> ring.active_id
    'k0'
    """
    text = value.strip()
    if text.startswith("{"):
        return PiiKeyring.from_json(text)
    raw: bytes | None = None
    if len(text) == 2 * _KEY_BYTES:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            decoded = base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError) as exc:
            raise ParameterError("CIPHERSEG_PII_KEY must be keyring JSON, base64 keyring "
                                 "JSON, or a 32-byte key as base64 or 64 hex digits") from exc
        if decoded.lstrip().startswith(b"{"):
            return PiiKeyring.from_json(decoded.decode("utf-8"))
        raw = decoded
    if len(raw) != _KEY_BYTES:
        raise ParameterError(f"CIPHERSEG_PII_KEY must hold {_KEY_BYTES} bytes, got {len(raw)};"
                             " generate one with `python -c 'import secrets; "
                             "print(secrets.token_hex(32))'`")
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def derive(label: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None,
                    info=b"cipherseg-pii/" + label).derive(raw)

    return PiiKeyring("k0", {"k0": derive(b"data")}, derive(b"pseudonym"))
