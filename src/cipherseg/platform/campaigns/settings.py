"""Campaign settings (``CIPHERSEG_`` environment variables) and the gateway callback secret.

========================================  ===================================================
``CIPHERSEG_SMS_GATEWAY``                 ``outbox`` (default: messages go to a table) or
                                          ``kannel``
``CIPHERSEG_CAMPAIGN_APPROVAL``           ``true``: the operator approves each campaign
                                          before it is sent
``CIPHERSEG_SMS_RATE``                    messages per second (default 20)
``CIPHERSEG_SMS_SENDER``                  sender id shown on phones
``CIPHERSEG_SMS_OPT_OUT_TEXT``            the ``{{ opt_out }}`` line
``CIPHERSEG_QUIET_HOURS``                 ``21:00-08:00`` (customer's local time), or ``off``
``CIPHERSEG_FREQUENCY_CAP``               ``3/7`` = at most 3 messages per number per 7 days,
                                          or ``off``
``CIPHERSEG_KANNEL_SENDSMS_URL``          ``http://127.0.0.1:13013/cgi-bin/sendsms``
``CIPHERSEG_KANNEL_USERNAME`` / ``_PASSWORD``  a Kannel ``sendsms-user``
``CIPHERSEG_SMS_CALLBACK_URL``            how Kannel reaches this platform, e.g.
                                          ``http://127.0.0.1:8000`` (delivery reports)
``CIPHERSEG_SMS_CALLBACK_KEY``            secret for signed delivery-report URLs and the MO
                                          token (else ``<data dir>/keys/sms-callback.key``,
                                          generated with mode 0600)
========================================  ===================================================

>>> s = CampaignSettings(quiet_hours="22:00-07:30", frequency_cap="2/1")
>>> p = s.policy("Asia/Shanghai")
>>> p.quiet_hours.start.isoformat(), p.frequency_cap.describe()
('22:00:00', 'frequency cap (2 per 1 day)')
>>> CampaignSettings(quiet_hours="off", frequency_cap="off").policy("UTC").quiet_hours is None
True
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cipherseg.errors import KeyCustodyError, ParameterError
from cipherseg.messaging.callbacks import DlrSigner
from cipherseg.messaging.rules import DeliveryPolicy, FrequencyCap, QuietHours, RetryPolicy
from cipherseg.pii.keys import write_secret_file


def _parse_time(text: str) -> time:
    try:
        hh, mm = text.strip().split(":")
        return time(int(hh), int(mm))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time like 21:00") from exc


class CampaignSettings(BaseSettings):
    """Settings of campaigns and the SMS gateway (each ``CIPHERSEG_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="CIPHERSEG_", extra="ignore")

    sms_gateway: Literal["outbox", "kannel"] = "outbox"
    campaign_approval: bool = False
    sms_rate: float = Field(default=20.0, gt=0)
    sms_concurrency: int = Field(default=8, ge=1, le=256)
    sms_sender: str | None = None
    sms_opt_out_text: str = "Reply STOP to opt out"
    quiet_hours: str = "21:00-08:00"
    frequency_cap: str = "3/7"
    sms_max_attempts: int = Field(default=5, ge=1)
    sms_max_parts: int = Field(default=6, ge=1, le=10)
    kannel_sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = "cipherseg"
    kannel_password: SecretStr = SecretStr("")
    kannel_smsc: str | None = None
    sms_callback_url: str = "http://127.0.0.1:8000"
    sms_callback_key: SecretStr | None = None
    #: Seconds to wait for a delivery report before an attempt whose outcome a crash made
    #: unknown is made again (Kannel).
    sms_in_doubt_seconds: float = Field(default=300.0, ge=0)
    #: Seconds a campaign stays open after its last send for late SMSC rejections.
    sms_report_wait_seconds: float = Field(default=30.0, ge=0)

    @field_validator("quiet_hours")
    @classmethod
    def _quiet(cls, value: str) -> str:
        if value.strip().lower() in ("off", "none", ""):
            return "off"
        start, sep, end = value.partition("-")
        if not sep:
            raise ValueError("quiet hours look like 21:00-08:00 (or off)")
        if _parse_time(start) == _parse_time(end):
            raise ValueError("quiet hours need different start and end times")
        return value.strip()

    @field_validator("frequency_cap")
    @classmethod
    def _cap(cls, value: str) -> str:
        if value.strip().lower() in ("off", "none", ""):
            return "off"
        n, sep, days = value.partition("/")
        try:
            ok = bool(sep) and int(n) >= 1 and float(days) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError("a frequency cap looks like 3/7 (3 messages per 7 days) or off")
        return value.strip()

    def policy(self, default_timezone: str) -> DeliveryPolicy:
        """The delivery rules these settings describe."""
        quiet = None
        if self.quiet_hours != "off":
            start, _, end = self.quiet_hours.partition("-")
            quiet = QuietHours(_parse_time(start), _parse_time(end))
        cap = None
        if self.frequency_cap != "off":
            n, _, days = self.frequency_cap.partition("/")
            cap = FrequencyCap(int(n), timedelta(days=float(days)))
        return DeliveryPolicy(quiet_hours=quiet, frequency_cap=cap,
                              default_timezone=default_timezone)

    def retry(self) -> RetryPolicy:
        """Retries for messages the gateway or the SMSC refused for now."""
        return RetryPolicy(max_attempts=self.sms_max_attempts)


class CallbackSecrets:
    """The delivery-report signer and the MO token, both derived from one secret.

    >>> cs = CallbackSecrets(b"k" * 32)
    >>> len(cs.mo_token), cs.signer.verify(1, 1, cs.signer.sign(1, 1))
    (32, True)
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ParameterError("the SMS callback key needs at least 16 bytes")
        self.signer = DlrSigner(hmac.new(secret, b"cipherseg-dlr", hashlib.sha256).digest())
        self.mo_token = hmac.new(secret, b"cipherseg-mo", hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:
        return "CallbackSecrets(<secret>)"


def load_callback_secrets(settings: CampaignSettings, keys_dir: Path) -> CallbackSecrets:
    """From ``CIPHERSEG_SMS_CALLBACK_KEY``, else the key file (created 0600 if missing)."""
    if settings.sms_callback_key is not None:
        value = settings.sms_callback_key.get_secret_value()
        if len(value) < 16:
            raise KeyCustodyError("CIPHERSEG_SMS_CALLBACK_KEY must have at least 16 "
                                  "characters")
        return CallbackSecrets(value.encode())
    path = keys_dir / "sms-callback.key"
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyCustodyError(f"the SMS callback key {path} is readable by other users "
                                  f"(mode {oct(mode)}); run `chmod 600 {path}`")
        return CallbackSecrets(path.read_text(encoding="utf-8").strip().encode())
    value = secrets.token_urlsafe(32)
    write_secret_file(path, value + "\n")
    return CallbackSecrets(value.encode())
