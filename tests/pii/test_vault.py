"""The PII vault: AES-GCM round trips, tamper and swap detection, key rotation, keyring files."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipherseg.errors import CiphertextError, KeyCustodyError, ParameterError
from cipherseg.pii import PiiKeyring, PiiVault, keyring_from_setting, load_or_create_keyring

VAULT = PiiVault(PiiKeyring.generate())


@settings(max_examples=60, deadline=None)
@given(value=st.text(max_size=64), context=st.text(max_size=20), field=st.sampled_from(
    ["phone", "first_name"]))
def test_round_trip(value: str, context: str, field: str) -> None:
    blob = VAULT.encrypt(field, value, context=context)
    assert VAULT.decrypt(field, blob, context=context) == value
    assert len(value.encode()) < 8 or value.encode() not in blob


def test_each_encryption_uses_a_fresh_nonce() -> None:
    a = VAULT.encrypt("phone", "+8613812345678", context="c")
    b = VAULT.encrypt("phone", "+8613812345678", context="c")
    assert a != b


@pytest.mark.parametrize("position", [0, 1, 5, 20, -1])
def test_tampered_ciphertext_is_refused(position: int) -> None:
    blob = bytearray(VAULT.encrypt("phone", "+8613812345678", context="c"))
    blob[position] ^= 0x01
    with pytest.raises((CiphertextError, KeyCustodyError)):
        VAULT.decrypt("phone", bytes(blob), context="c")


def test_truncated_ciphertext_is_refused() -> None:
    blob = VAULT.encrypt("phone", "+8613812345678", context="c")
    for cut in (0, 1, 5, len(blob) - 1):
        with pytest.raises(CiphertextError):
            VAULT.decrypt("phone", blob[:cut], context="c")


def test_ciphertext_moved_to_another_record_or_field_is_refused() -> None:
    blob = VAULT.encrypt("phone", "+8613812345678", context="alice")
    with pytest.raises(CiphertextError, match="another record"):
        VAULT.decrypt("phone", blob, context="bob")
    with pytest.raises(CiphertextError):
        VAULT.decrypt("first_name", blob, context="alice")


def test_rotation_keeps_old_ciphertexts_readable_until_retired() -> None:
    ring = PiiKeyring.generate()
    old = PiiVault(ring)
    blob = old.encrypt("phone", "+447911123123", context="c")
    new = PiiVault(ring.with_new_active_key())
    assert new.decrypt("phone", blob, context="c") == "+447911123123"
    moved = new.reencrypt("phone", blob, context="c")
    assert new.key_id_of(moved) == new.keyring.active_id != old.keyring.active_id
    assert new.reencrypt("phone", moved, context="c") is moved
    retired = PiiVault(new.keyring.retire_inactive())
    assert retired.decrypt("phone", moved, context="c") == "+447911123123"
    with pytest.raises(KeyCustodyError, match="not in the keyring"):
        retired.decrypt("phone", blob, context="c")
    # pseudonyms survive rotation (they are join keys)
    assert retired.pseudonym("customer", "x") == old.pseudonym("customer", "x")


def test_pseudonyms_depend_on_the_key() -> None:
    a, b = PiiVault(PiiKeyring.generate()), PiiVault(PiiKeyring.generate())
    assert a.pseudonym("customer", "C1") != b.pseudonym("customer", "C1")
    assert a.pseudonym("customer", "C1") != a.pseudonym("customer", "C2")


def test_keyring_file_is_private_and_stable(tmp_path) -> None:
    path = tmp_path / "keys" / "pii.keyring"
    ring = load_or_create_keyring(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_keyring(path) == ring
    os.chmod(path, 0o644)
    with pytest.raises(KeyCustodyError, match="chmod 600"):
        load_or_create_keyring(path)


def test_keyring_repr_and_str_hold_no_key_material() -> None:
    ring = PiiKeyring.generate()
    text = repr(ring) + str(ring) + repr(PiiVault(ring))
    for key in (*ring.data_keys.values(), ring.pseudonym_key):
        assert key.hex() not in text
        assert json.loads(ring.to_json())["pseudonym_key"] not in text


def test_keyring_json_unknown_version_and_garbage_refused() -> None:
    doc = json.loads(PiiKeyring.generate().to_json())
    doc["version"] = 99
    with pytest.raises(KeyCustodyError, match="version"):
        PiiKeyring.from_json(json.dumps(doc))
    with pytest.raises(KeyCustodyError):
        PiiKeyring.from_json("not json")
    with pytest.raises(KeyCustodyError):
        PiiKeyring.from_json(json.dumps({"version": 1, "active": "a"}))


def test_keyring_from_setting_accepts_json_hex_and_base64() -> None:
    ring = PiiKeyring.generate()
    assert keyring_from_setting(ring.to_json()) == ring
    import base64

    assert keyring_from_setting(base64.b64encode(ring.to_json().encode()).decode()) == ring
    hexed = keyring_from_setting("ab" * 32)
    assert hexed == keyring_from_setting(base64.b64encode(bytes.fromhex("ab" * 32)).decode())
    assert hexed.pseudonym_key != hexed.data_keys["k0"]
    with pytest.raises(ParameterError, match="32 bytes"):
        keyring_from_setting("ab" * 8)
    with pytest.raises(ParameterError):
        keyring_from_setting("not base64 !!")
