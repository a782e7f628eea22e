"""Settings: secrets from environment or 0600 key files, never shown; placeholders refused."""

from __future__ import annotations

import os

import pytest

from cipherseg.errors import KeyCustodyError, ParameterError
from cipherseg.platform.core.config import Settings
from cipherseg.platform.db import normalise_url


def test_secrets_are_generated_once_with_private_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(data_dir=tmp_path / "d")
    key = s.session_secret
    ring = s.pii_keyring
    for name in ("session.key", "pii.keyring"):
        path = tmp_path / "d" / "keys" / name
        assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d" / "keys").stat().st_mode & 0o777 == 0o700
    again = Settings(data_dir=tmp_path / "d")
    assert again.session_secret == key and again.pii_keyring == ring
    assert key not in repr(s) and key not in str(s.model_dump())


def test_secrets_from_the_environment_win(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CIPHERSEG_SESSION_KEY", "x" * 40)
    monkeypatch.setenv("CIPHERSEG_PII_KEY", "ab" * 32)
    monkeypatch.setenv("CIPHERSEG_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.session_secret == "x" * 40
    assert s.pii_keyring.active_id == "k0"
    assert not (tmp_path / "keys").exists()
    assert "x" * 40 not in repr(s)


@pytest.mark.parametrize("value", ["changethis", "secret", "", "CHANGEME"])
def test_placeholder_secrets_are_refused_outside_development(tmp_path, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyCustodyError, match="placeholder"):
        _ = Settings(data_dir=tmp_path, session_key=value).session_secret
    with pytest.raises(KeyCustodyError, match="placeholder"):
        _ = Settings(data_dir=tmp_path, pii_key=value).pii_keyring
    dev = Settings(data_dir=tmp_path, environment="development", session_key=value or "dev",
                   pii_key=value or "dev")
    assert dev.session_secret == (value or "dev")
    assert dev.pii_keyring.active_id == "k0"


def test_short_session_key_is_refused_in_production(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KeyCustodyError, match="at least 32"):
        _ = Settings(data_dir=tmp_path, session_key="short-but-not-placeholder").session_secret


def test_world_readable_key_file_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Settings(data_dir=tmp_path)
    _ = s.session_secret
    os.chmod(tmp_path / "keys" / "session.key", 0o644)
    with pytest.raises(KeyCustodyError, match="chmod 600"):
        _ = Settings(data_dir=tmp_path).session_secret


def test_database_urls_get_the_project_drivers() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("mysql://root@h/db").startswith("mysql+pymysql://root@h/db")
    with pytest.raises(ParameterError, match="unsupported database"):
        normalise_url("oracle://u@h/db")


def test_unknown_phone_region_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="unknown phone region"):
        Settings(data_dir=tmp_path, default_region="XX")
