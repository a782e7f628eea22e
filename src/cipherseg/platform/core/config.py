"""Platform settings (pydantic-settings, prefix ``CIPHERSEG_``) and secret loading.

Secrets — the session key and the PII keyring — come from the environment
(``CIPHERSEG_SESSION_KEY``, ``CIPHERSEG_PII_KEY``) or from key files under
``<data dir>/keys/`` (``CIPHERSEG_SESSION_KEY_FILE``, ``CIPHERSEG_PII_KEY_FILE`` to move
them). Missing key files are generated on first run with mode 0600. Known placeholder values
("changethis", "secret", …) and short keys are refused outside ``environment=development``.
Secret values are :class:`pydantic.SecretStr`, so they never show in ``repr`` or logs.

>>> s = Settings(data_dir="/tmp/cs-doc", environment="development")
>>> s.resolved_database_url()
'sqlite:////tmp/cs-doc/cipherseg.db'
>>> "session_key" in repr(s) and "changethis" not in repr(Settings(session_key="changethis"))
True
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cipherseg.errors import KeyCustodyError, ParameterError
from cipherseg.pii.keys import (
    PiiKeyring,
    keyring_from_setting,
    load_or_create_keyring,
    write_secret_file,
)

Environment = Literal["development", "test", "production"]

#: Values that appear in tutorials and .env examples; never accepted outside development.
PLACEHOLDER_SECRETS = frozenset({
    "", "changethis", "change-me", "changeme", "secret", "password", "development", "dev",
    "test", "insecure", "default",
})
_MIN_SESSION_KEY_CHARS = 32

#: Schemes the web app offers. ``plain`` (no encryption) is never selectable here.
WEB_SCHEMES = ("ckks",)


class Settings(BaseSettings):
    """Every setting of the platform; each can be set as ``CIPHERSEG_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CIPHERSEG_", extra="ignore")

    environment: Environment = "production"
    data_dir: Path = Path("data")
    database_url: str | None = None
    session_key: SecretStr | None = None
    session_key_file: Path | None = None
    pii_key: SecretStr | None = None
    pii_key_file: Path | None = None

    #: Region used to read phone numbers written without a country code.
    default_region: str = "CN"
    #: Time zone for customers whose row has none (used by campaigns).
    default_timezone: str = "Asia/Shanghai"
    #: Merchants see a segment only if it has at least this many customers.
    min_segment_size: int = Field(default=50, ge=1)
    #: Force the Secure cookie flag; otherwise set when the request came over https.
    cookie_secure: bool = False
    session_hours: float = Field(default=8.0, gt=0)
    #: Failed logins of one user name from one address before that pair waits.
    login_max_failures: int = Field(default=5, ge=1)
    #: Failed logins of one user name from all addresses together before it waits (the
    #: global cap against guessing from many addresses; an administrator can unlock).
    login_user_max_failures: int = Field(default=20, ge=1)
    login_window_minutes: float = Field(default=15.0, gt=0)
    #: Proxies whose ``X-Forwarded-For``/``-Proto`` are believed: addresses or networks,
    #: comma-separated (e.g. ``127.0.0.1`` behind a local nginx). Default: none.
    trusted_proxies: str = ""
    #: A temporary password from an administrator's reset works once, within this time.
    temp_password_hours: float = Field(default=24.0, gt=0)
    #: The largest uploaded file; the upload routes' body limit (checked before reading).
    max_upload_mb: int = Field(default=200, ge=1)
    #: The body limit of every other route (forms, JSON), checked before reading.
    max_body_kb: int = Field(default=1024, ge=16)
    #: An .xlsx upload's parts together, uncompressed (checked before it is opened).
    xlsx_max_uncompressed_mb: int = Field(default=1024, ge=1)
    #: How many times a part over 1 MB may expand (zip bombs expand ~1000 times).
    xlsx_max_ratio: float = Field(default=200.0, ge=10)
    #: The workbook's shared strings, uncompressed (all held in memory while importing).
    xlsx_max_shared_strings_mb: int = Field(default=16, ge=1)
    #: Background worker threads started inside ``cipherseg serve`` (0: run ``cipherseg
    #: worker`` separately).
    worker_threads: int = Field(default=1, ge=0)
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    #: Run the compute-centre side in its own process (the service account ``centre``).
    centre_process: bool = True
    centre_account: str = "centre"
    #: Run the centre process as this operating-system user (needs root); default: same user.
    centre_os_user: str | None = None
    #: A compute centre run elsewhere (``cipherseg centre serve``); overrides centre_process.
    centre_url: str | None = None
    #: Its access token file, and the CA bundle that signed its TLS certificate.
    centre_token_file: Path | None = None
    centre_ca_file: Path | None = None
    #: Parallel processes for encrypted work (``n_jobs`` of the estimator).
    n_jobs: int = 1
    max_k: int = Field(default=12, ge=2)
    #: This platform as a node of joint segmentations across organisations (docs/deployment.md):
    #: its name at the manager and centre services, their URLs, its token files there.
    node_name: str | None = None
    node_manager_url: str | None = None
    node_manager_token_file: Path | None = None
    node_centre_url: str | None = None
    node_centre_token_file: Path | None = None
    node_ca_file: Path | None = None
    #: End a cross-node job when a service has been unreachable this long.
    node_contact_seconds: float = Field(default=60.0, gt=0)
    #: How long an invitation stays valid (the other nodes must accept within this).
    node_invitation_minutes: float = Field(default=15.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        from cipherseg.platform.proxies import parse_trusted

        try:
            parse_trusted(value)
        except ValueError as exc:
            raise ValueError(f"CIPHERSEG_TRUSTED_PROXIES: {exc}; give addresses or networks "
                             "separated by commas, e.g. 127.0.0.1,10.0.0.0/8") from None
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {value!r}; use a two-letter code like CN")
        return value

    # ----------------------------------------------------------------- derived values
    def resolved_database_url(self) -> str:
        """The database URL: ``CIPHERSEG_DATABASE_URL`` or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.ensure_data_dir().resolve() / 'cipherseg.db'}"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def _refuse_placeholder(self, name: str, value: str) -> None:
        if self.environment == "development":
            return
        if value.strip().lower() in PLACEHOLDER_SECRETS:
            raise KeyCustodyError(
                f"CIPHERSEG_{name.upper()} is a placeholder value; outside development set a "
                "random secret (or unset it and a key file is generated on first run)")

    @cached_property
    def session_secret(self) -> str:
        """The session signing key (environment, then key file, else generated)."""
        if self.session_key is not None:
            value = self.session_key.get_secret_value()
            self._refuse_placeholder("session_key", value)
            if self.environment != "development" and len(value) < _MIN_SESSION_KEY_CHARS:
                raise KeyCustodyError(
                    f"CIPHERSEG_SESSION_KEY must have at least {_MIN_SESSION_KEY_CHARS} "
                    "characters; generate one with `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`")
            return value
        path = self.session_key_file or self.keys_dir / "session.key"
        if path.exists():
            mode = path.stat().st_mode & 0o777
            if mode & 0o077:
                raise KeyCustodyError(f"the session key file {path} is readable by other "
                                      f"users (mode {oct(mode)}); run `chmod 600 {path}`")
            value = path.read_text(encoding="utf-8").strip()
            self._refuse_placeholder("session_key", value)
            return value
        value = secrets.token_urlsafe(48)
        write_secret_file(path, value + "\n")
        return value

    @cached_property
    def pii_keyring(self) -> PiiKeyring:
        """The PII keyring (environment, then key file, else generated)."""
        if self.pii_key is not None:
            value = self.pii_key.get_secret_value()
            self._refuse_placeholder("pii_key", value)
            try:
                return keyring_from_setting(value)
            except ParameterError:
                if self.environment == "development":
                    import hashlib

                    return keyring_from_setting(hashlib.sha256(value.encode()).hexdigest())
                raise
        return load_or_create_keyring(self.pii_keyring_path)

    @property
    def pii_keyring_path(self) -> Path:
        return self.pii_key_file or self.keys_dir / "pii.keyring"

    @property
    def pii_keyring_from_env(self) -> bool:
        return self.pii_key is not None

    def ensure_data_dir(self) -> Path:
        """Create the data directory private to this user (0700) if it does not exist."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.data_dir

    def check_secrets(self) -> None:
        """Load (or create) both secrets now, so misconfiguration fails at start-up."""
        _ = self.session_secret
        _ = self.pii_keyring
