"""Invitations to a joint session: the terms, signed by the inviting node, as one string
to hand over out of band (mail, chat, a URL's fragment).

Format: ``cseg-invite.1.<base64url(JSON)>.<base64url(Ed25519 signature)>``; the JSON holds
the terms (:class:`~cipherseg.nodes.terms.JointTerms`), the inviting node's name, its
Ed25519 public key and an expiry. The invited node verifies the signature and shows the
key's fingerprint, which its operator compares with the one the inviter reads out over
another channel; the manager then checks that every node joined with the same terms, so a
changed invitation cannot start a session. The signature proves the terms came from the
holder of that key, not who that is: the fingerprint comparison does.

>>> key = new_signing_key()
>>> from cipherseg.nodes.terms import JointTerms
>>> t = JointTerms(session="b" * 32, nodes=("north", "south"), n_clusters=3, features=("x",))
>>> token = sign_invitation(t, "north", key, valid_seconds=3600)
>>> inv = read_invitation(token)
>>> inv.terms == t, inv.inviter, inv.fingerprint == fingerprint(key.public_key())
(True, 'north', True)
>>> read_invitation(token[:-4] + "AAAA")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: the invitation's signature does not verify: ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cipherseg.errors import ValidationError
from cipherseg.nodes.terms import JointTerms
from cipherseg.transport.tokens import OWNER_NAME, write_new_private_file

PREFIX = "cseg-invite.1."
MAX_INVITATION_CHARS = 16_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The node's invitation key at ``path`` (32 raw bytes, mode 0600), created if missing."""
    if not path.exists():
        key = new_signing_key()
        raw = key.private_bytes_raw()
        write_new_private_file(path, _b64(raw) + "\n")
        return key
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    try:
        return Ed25519PrivateKey.from_private_bytes(_unb64(path.read_text().strip()))
    except (ValueError, binascii.Error) as exc:
        raise ValidationError(f"{path} does not hold a node invitation key") from exc


def fingerprint(key: Ed25519PublicKey) -> str:
    """What operators compare over the phone: 64 bits of the key's SHA-256, in groups."""
    digest = hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    return "-".join(digest[i:i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True)
class Invitation:
    terms: JointTerms
    inviter: str
    fingerprint: str
    expires: datetime

    @property
    def expired(self) -> bool:
        return datetime.now(UTC) >= self.expires


def sign_invitation(terms: JointTerms, inviter: str, key: Ed25519PrivateKey, *,
                    valid_seconds: float) -> str:
    if inviter not in terms.nodes:
        raise ValidationError("the inviting node must be one of the terms' nodes")
    expires = datetime.now(UTC) + timedelta(seconds=valid_seconds)
    payload = json.dumps({
        "terms": terms.to_json(), "inviter": inviter, "expires": expires.isoformat(),
        "key": _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
    }, sort_keys=True, separators=(",", ":")).encode()
    return PREFIX + _b64(payload) + "." + _b64(key.sign(payload))


def read_invitation(token: str) -> Invitation:
    """The verified invitation in ``token`` (expired ones too: callers check ``expired``)."""
    token = "".join(token.split())  # pasted across lines
    if len(token) > MAX_INVITATION_CHARS or not token.startswith(PREFIX):
        raise ValidationError("this is not a cipherseg invitation (it starts with "
                              f"{PREFIX!r})")
    try:
        body, sig = token[len(PREFIX):].split(".")
        payload, signature = _unb64(body), _unb64(sig)
        doc = json.loads(payload)
        key = Ed25519PublicKey.from_public_bytes(_unb64(doc["key"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ValidationError("the invitation is damaged (copy it again in full)") from None
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise ValidationError("the invitation's signature does not verify: it was changed "
                              "or damaged") from None
    try:
        inviter, expires = str(doc["inviter"]), datetime.fromisoformat(doc["expires"])
    except (KeyError, ValueError, TypeError):
        raise ValidationError("the invitation is damaged (copy it again in full)") from None
    terms = JointTerms.from_json(doc.get("terms"))
    if not OWNER_NAME.fullmatch(inviter) or inviter not in terms.nodes or expires.tzinfo is None:
        raise ValidationError("the invitation names an inviter outside its terms")
    return Invitation(terms, inviter, fingerprint(key), expires)
