"""Is the SMS gateway ready? The checks the operator's page shows and start-up logs.

Each check says what is wrong and what to set. With Kannel:

* **settings** — the sendsms password, the sender (Kannel refuses every message without
  one, "Sender missing and no global set", unless its own configuration sets a global
  sender) and the public base URL (delivery reports and opt-outs come back through it);
* **Kannel reachable** — a ``POST`` to smsbox's sendsms with the credentials and no
  recipient: ``400 Missing receiver`` means smsbox answers and accepts the credentials
  (nothing is sent); ``403`` means the credentials are refused; no answer means Kannel is
  down or the URL is wrong;
* **callback URL reachable** — a request from this host to
  ``<public base URL>/gateway/kannel/ping`` with a random nonce must come back with this
  platform's signature of the nonce: it proves the URL leads to *this* platform, not just
  to some web server (it cannot prove that Kannel's host reaches it the same way).

The sender's acceptance by the SMSC itself shows only when a message goes out: the
operator's "send a test message" does that through the same gateway and rules.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass

import httpx

from cipherseg.platform.campaigns.context import callback_secrets, campaign_settings
from cipherseg.platform.deps import PlatformContext

log = logging.getLogger("cipherseg.platform.campaigns")

PING_PATH = "/gateway/kannel/ping"


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the gateway check: ``ok`` True (fine), False (broken) or None (a note)."""

    name: str
    ok: bool | None
    detail: str


def ping_answer(ctx: PlatformContext, nonce: str) -> str:
    """This platform's signature of a callback-reachability nonce."""
    key = callback_secrets(ctx).mo_token.encode()
    return hmac.new(key, f"ping/{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def _kannel_reachable(ctx: PlatformContext) -> Check:
    cs = campaign_settings(ctx)
    headers = {"X-Kannel-Username": cs.kannel_username,
               "X-Kannel-Password": cs.kannel_password.get_secret_value(),
               "Content-Type": "text/plain; charset=UTF-8"}
    try:
        resp = httpx.post(cs.kannel_sendsms_url, headers=headers, content=b"check",
                          timeout=3.0, trust_env=False)
    except httpx.HTTPError as exc:
        return Check("Kannel reachable", False,
                     f"no answer from {cs.kannel_sendsms_url} ({type(exc).__name__}); start "
                     "smsbox or fix CIPHERSEG_KANNEL_SENDSMS_URL")
    text = resp.text.strip()[:80]
    if resp.status_code in (401, 403):
        return Check("Kannel reachable", False,
                     f"smsbox refuses the credentials ({resp.status_code}: {text}); check "
                     "CIPHERSEG_KANNEL_USERNAME/_PASSWORD and the sendsms-user's "
                     "user-allow-ip")
    if resp.status_code == 400 and "receiver" in text.lower():
        return Check("Kannel reachable", True,
                     f"smsbox at {cs.kannel_sendsms_url} answers and accepts the "
                     "credentials")
    return Check("Kannel reachable", False,
                 f"unexpected answer from {cs.kannel_sendsms_url} ({resp.status_code}: "
                 f"{text}); is this Kannel's sendsms interface?")


def _callback_reachable(ctx: PlatformContext, base: str) -> Check:
    nonce = secrets.token_hex(8)
    url = f"{base}{PING_PATH}"
    try:
        resp = httpx.get(url, params={"n": nonce}, timeout=3.0, trust_env=False)
    except httpx.HTTPError as exc:
        return Check("Callback URL reachable", False,
                     f"{url} does not answer from this host ({type(exc).__name__}); is "
                     "CIPHERSEG_PUBLIC_BASE_URL the address this server is reached at?")
    if resp.status_code == 200 and hmac.compare_digest(resp.text.strip(),
                                                       ping_answer(ctx, nonce)):
        return Check("Callback URL reachable", True,
                     f"{url} leads to this platform (checked from this host)")
    return Check("Callback URL reachable", False,
                 f"{url} answers ({resp.status_code}) but not as this platform: it leads "
                 "to another server or another cipherseg; fix CIPHERSEG_PUBLIC_BASE_URL")


def gateway_checks(ctx: PlatformContext, *, probe: bool = True) -> list[Check]:
    """The checks (module docstring); ``probe=False`` checks the settings only."""
    cs = campaign_settings(ctx)
    checks: list[Check] = []
    if cs.sms_gateway == "outbox":
        checks.append(Check("Gateway", None,
                            "outbox: messages are recorded in the database, not sent to "
                            "phones; set CIPHERSEG_SMS_GATEWAY=kannel to send"))
    else:
        checks.append(Check("Gateway", True, f"Kannel at {cs.kannel_sendsms_url}"))
        checks.append(Check("Sendsms password", bool(cs.kannel_password.get_secret_value()),
                            "set" if cs.kannel_password.get_secret_value() else
                            "CIPHERSEG_KANNEL_PASSWORD is not set"))
        checks.append(Check("Sender", bool(cs.sms_sender),
                            f"{cs.sms_sender}" if cs.sms_sender else
                            "CIPHERSEG_SMS_SENDER is not set: Kannel refuses every message "
                            "(\"Sender missing and no global set\") unless its own "
                            "configuration sets a global-sender"))
    base = cs.public_base_url
    if base is None:
        checks.append(Check("Public base URL", False if cs.sms_gateway == "kannel" else None,
                            "CIPHERSEG_PUBLIC_BASE_URL is not set: Kannel cannot be told "
                            "where to send delivery reports and opt-outs"))
    else:
        checks.append(Check("Public base URL", True, base))
    if probe and cs.sms_gateway == "kannel":
        checks.append(_kannel_reachable(ctx))
    if probe and base is not None:
        checks.append(_callback_reachable(ctx, base))
    return checks


def log_checks_at_startup(ctx: PlatformContext, *, delay: float = 2.0) -> threading.Thread:
    """Run the checks once the server is up (in the background) and log what is wrong."""

    def run() -> None:
        time.sleep(delay)
        try:
            checks = gateway_checks(ctx)
        except Exception as exc:  # never take the server down for a check
            log.warning("gateway check failed to run: %s", type(exc).__name__)
            return
        for c in checks:
            if c.ok is False:
                log.warning("SMS gateway check: %s: %s", c.name, c.detail)
            else:
                log.info("SMS gateway check: %s: %s", c.name, c.detail)

    thread = threading.Thread(target=run, name="cipherseg-gateway-check", daemon=True)
    thread.start()
    return thread
