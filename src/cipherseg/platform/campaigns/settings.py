"""Campaign settings (``CIPHERSEG_`` environment variables) and the gateway callback secret.

==========================================  =================================================
``CIPHERSEG_SMS_GATEWAY``                   ``outbox`` (default: messages go to a table) or
                                            ``kannel``
``CIPHERSEG_SMS_SENDER``                    sender id shown on phones (**required** with
                                            Kannel unless its SMSC sets one)
``CIPHERSEG_PUBLIC_BASE_URL``               how Kannel reaches this platform, e.g.
                                            ``https://cipherseg.example.com`` (**required**
                                            with Kannel: delivery reports and opt-outs)
``CIPHERSEG_KANNEL_SENDSMS_URL``            ``http://127.0.0.1:13013/cgi-bin/sendsms``
``CIPHERSEG_KANNEL_USERNAME`` / ``_PASSWORD``  a Kannel ``sendsms-user`` (password
                                            **required** with Kannel)
``CIPHERSEG_CAMPAIGN_APPROVAL``             ``true``: the operator approves each campaign
``CIPHERSEG_SMS_RATE``                      messages per second (default 20)
``CIPHERSEG_SMS_OPT_OUT_TEXTS``             JSON, e.g. ``{"zh": "回复TD退订"}``: opt-out lines
                                            per language over the defaults
``CIPHERSEG_QUIET_HOURS``                   ``21:00-08:00`` (customer's local time), or ``off``
``CIPHERSEG_FREQUENCY_CAP``                 ``3/7`` = at most 3 messages per number per 7
                                            days, or ``off``
``CIPHERSEG_CAMPAIGN_HOLDOUT``              share held out to measure the effect (0.10)
``CIPHERSEG_LIFT_WINDOW_DAYS``              measurement window after the send (14)
``CIPHERSEG_LIFT_EPSILON``                  ε of the Laplace noise on the merchant's lift
                                            report (unset: no noise)
``CIPHERSEG_LIFT_SPEND_CAP``                spend per customer is clipped here for DP (5000)
``CIPHERSEG_SMS_CALLBACK_KEY``              secret for signed delivery-report URLs and the MO
                                            token (else ``<data dir>/keys/sms-callback.key``,
                                            generated with mode 0600)
==========================================  =================================================

>>> s = CampaignSettings(quiet_hours="22:00-07:30", frequency_cap="2/1")
>>> p = s.policy("Asia/Shanghai")
>>> p.quiet_hours.start.isoformat(), p.frequency_cap.describe()
('22:00:00', 'frequency cap (2 per 1 day)')
>>> CampaignSettings(quiet_hours="off", frequency_cap="off").policy("UTC").quiet_hours is None
True
>>> CampaignSettings(public_base_url="https://shop.example.com/").public_base_url
'https://shop.example.com'
>>> CampaignSettings(sms_opt_out_texts={"zh": "回复T退订"}).opt_out_lines()["zh"]
'回复T退订'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import time, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cipherseg.errors import KeyCustodyError, ParameterError, ValidationError
from cipherseg.messaging.callbacks import DlrSigner
from cipherseg.messaging.language import opt_out_lines
from cipherseg.messaging.rules import DeliveryPolicy, FrequencyCap, QuietHours, RetryPolicy
from cipherseg.pii.keys import write_secret_file


def validate_public_base_url(value: str) -> str:
    """An absolute http(s) URL of this platform as others reach it: a host, an optional
    port and path prefix; no query, fragment or credentials. Returned without the trailing
    slash.

    >>> validate_public_base_url("http://10.0.0.5:8765/")
    'http://10.0.0.5:8765'
    >>> validate_public_base_url("ftp://x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: the public base URL must start with http:// or https://...
    """
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValidationError("the public base URL must start with http:// or https:// "
                              "(e.g. https://cipherseg.example.com)")
    if not parts.hostname:
        raise ValidationError("the public base URL needs a host name")
    if parts.username or parts.password:
        raise ValidationError("the public base URL must not contain credentials")
    if parts.query or parts.fragment:
        raise ValidationError("the public base URL must not have a ?query or #fragment")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValidationError(f"the public base URL has a bad port ({exc})") from exc
    if any(ch.isspace() for ch in text):
        raise ValidationError("the public base URL must not contain spaces")
    return text.rstrip("/")


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
    sms_sender: str | None = Field(default=None, max_length=32)
    #: Opt-out lines per language over the defaults (``{"zh": "回复TD退订"}``).
    sms_opt_out_texts: dict[str, str] = Field(default_factory=dict)
    quiet_hours: str = "21:00-08:00"
    frequency_cap: str = "3/7"
    sms_max_attempts: int = Field(default=5, ge=1)
    sms_max_parts: int = Field(default=6, ge=1, le=10)
    kannel_sendsms_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    kannel_username: str = "cipherseg"
    kannel_password: SecretStr = SecretStr("")
    kannel_smsc: str | None = None
    #: How Kannel (and anyone following a link) reaches this platform.
    public_base_url: str | None = None
    sms_callback_key: SecretStr | None = None
    #: Share of each segment's sendable customers held out to measure the effect.
    campaign_holdout: float = Field(default=0.10, ge=0.0, le=0.5)
    #: Days after the send whose purchases count.
    lift_window_days: int = Field(default=14, ge=1, le=365)
    #: ε of the Laplace noise on the merchant's lift report; unset: no noise.
    lift_epsilon: float | None = Field(default=None, gt=0, le=100)
    #: Spend per customer is clipped to this for the noisy release.
    lift_spend_cap: float = Field(default=5000.0, gt=0)
    #: Seconds to wait for a delivery report before an attempt whose outcome a crash made
    #: unknown is made again (Kannel).
    sms_in_doubt_seconds: float = Field(default=300.0, ge=0)
    #: Seconds a campaign stays open after its last send for late SMSC rejections.
    sms_report_wait_seconds: float = Field(default=30.0, ge=0)

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            return validate_public_base_url(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("sms_opt_out_texts")
    @classmethod
    def _opt_out_texts(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            opt_out_lines(value)
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("sms_sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.isascii() or any(ch.isspace() or not ch.isprintable() for ch in value):
            raise ValueError("the sender id is a short code or up to 11 letters and digits "
                             "without spaces")
        return value

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

    def opt_out_lines(self) -> dict[str, str]:
        """The opt-out line of each language."""
        return opt_out_lines(self.sms_opt_out_texts)

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
