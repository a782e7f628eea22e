"""Personal data: AES-GCM vault, keyed pseudonyms, phone normalisation and masking.

A leaf package (no platform imports): the web platform, the messaging gateways and the CLI
use it with configuration they pass in.

>>> from cipherseg.pii import PiiKeyring, PiiVault, mask_phone
>>> vault = PiiVault(PiiKeyring.generate())
>>> mask_phone(vault.decrypt("phone", vault.encrypt("phone", "+8613812345678", context="c"),
...                          context="c"), region="CN")
'138****5678'
"""

from __future__ import annotations

from cipherseg.pii.keys import PiiKeyring, keyring_from_setting, load_or_create_keyring
from cipherseg.pii.masking import (
    PhoneRedactingFilter,
    mask_phone,
    mask_raw,
    normalise_phone,
    redact_phones,
)
from cipherseg.pii.vault import PiiVault

__all__ = [
    "PhoneRedactingFilter",
    "PiiKeyring",
    "PiiVault",
    "keyring_from_setting",
    "load_or_create_keyring",
    "mask_phone",
    "mask_raw",
    "normalise_phone",
    "redact_phones",
]
