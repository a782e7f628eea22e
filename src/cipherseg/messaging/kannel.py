"""Kannel gateway adapter: Kannel's HTTP ``sendsms`` interface with delivery reports.

Each message is one ``POST /cgi-bin/sendsms`` in Kannel's header form: the text is the body
(``text/plain; charset=UTF-8``) and the parameters are ``X-Kannel-*`` headers, so the
recipient's number travels in a header, never in a URL that an HTTP client, proxy or access
log would record. The number is opened from its :class:`SealedPhone` right before the
request and exists only in that request.

Kannel answers ``202 "0: Accepted for delivery"`` (or ``"3: Queued for later delivery"``
when no SMSC is connected — it keeps the message and sends it later) without a message id,
so the adapter puts its own ``(message id, attempt, signature)`` into the ``dlr-url``;
:class:`~cipherseg.messaging.callbacks.MessagingCallbacks` applies the reports. UCS-2
messages (Chinese) are sent with ``X-Kannel-Coding: 2``; without it Kannel would turn them
into ``????`` and still answer 202.

How answers map to :class:`~cipherseg.messaging.gateway.SendStatus`: 2xx → ``ACCEPTED``;
403 (bad credentials) → :class:`~cipherseg.messaging.gateway.GatewayError` (sending
stops, nothing is lost); other 4xx → ``FAILED``; 503 or no connection → ``DOWN``; other
5xx → ``RETRY``; a timeout after the request was sent → ``IN_DOUBT``.

>>> from cipherseg.messaging.callbacks import DlrSigner
>>> gw = KannelGateway(sendsms_url="http://127.0.0.1:13013/cgi-bin/sendsms",
...                    username="u", password="p", open_phone=lambda p: "+8613812345678",
...                    dlr_url="http://127.0.0.1:8000/dlr", signer=DlrSigner(b"s" * 32))
>>> gw.dlr_url_for(7, 1).startswith("http://127.0.0.1:8000/dlr?m=7&a=1&k=")
True
>>> gw.close()
"""

from __future__ import annotations

import logging
import re

import httpx

from cipherseg.errors import ParameterError
from cipherseg.messaging.callbacks import DlrSigner
from cipherseg.messaging.gateway import (
    GatewayError,
    OutboundSms,
    PhoneOpener,
    SendResult,
    SendStatus,
)

log = logging.getLogger("cipherseg.messaging.kannel")

#: Report everything: delivered, undelivered, buffered, SMSC submit, SMSC reject.
DLR_MASK_ALL = 1 | 2 | 4 | 8 | 16
_DIGITS = re.compile(r"\+?\d[\d\s-]{6,}\d")


def _clean(text: str) -> str:
    """A gateway answer shortened and with anything number-like blanked, for reasons."""
    return _DIGITS.sub("<number>", text.strip().replace("\n", " "))[:120]


class KannelGateway:
    """A :class:`~cipherseg.messaging.gateway.Gateway` over Kannel's smsbox.

    Parameters
    ----------
    sendsms_url:
        ``http://host:sendsms-port/cgi-bin/sendsms``.
    username, password:
        A Kannel ``sendsms-user``.
    open_phone:
        Opens a sealed number (e.g. :func:`~cipherseg.messaging.gateway.vault_opener`).
    dlr_url, signer:
        Where Kannel should report deliveries, and the signer shared with the handler;
        without them no reports are requested.
    sender:
        Default ``from`` (an alphanumeric sender id or a short code); a message's own
        sender wins.
    smsc_id:
        Route through this SMSC (``X-Kannel-SMSC``).
    timeout:
        Seconds to wait for Kannel's answer; connecting has its own 3 s limit.
    max_connections:
        Keep-alive connections to smsbox (at least the engine's concurrency).
    """

    name = "kannel"
    idempotent = False

    def __init__(self, *, sendsms_url: str, username: str, password: str,
                 open_phone: PhoneOpener, dlr_url: str | None = None,
                 signer: DlrSigner | None = None, sender: str | None = None,
                 smsc_id: str | None = None, dlr_mask: int = DLR_MASK_ALL,
                 timeout: float = 10.0, max_connections: int = 64) -> None:
        if (dlr_url is None) != (signer is None):
            raise ParameterError("give dlr_url and signer together (or neither)")
        if not sendsms_url.startswith(("http://", "https://")):
            raise ParameterError("sendsms_url must be an http(s) URL such as "
                                 "http://127.0.0.1:13013/cgi-bin/sendsms")
        self.sendsms_url = sendsms_url
        self._auth = {"X-Kannel-Username": username, "X-Kannel-Password": password}
        self._open = open_phone
        self.dlr_url = dlr_url
        self.signer = signer
        self.sender = sender
        self.smsc_id = smsc_id
        self.dlr_mask = dlr_mask
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=3.0, pool=timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections),
            trust_env=False)

    def __repr__(self) -> str:
        return f"KannelGateway({self.sendsms_url!r}, user={self._auth['X-Kannel-Username']!r})"

    def dlr_url_for(self, message_id: int, attempt: int) -> str:
        """The dlr-url for one attempt (Kannel fills in ``%d``, the status)."""
        if self.dlr_url is None or self.signer is None:
            raise ParameterError("this gateway was built without dlr_url")
        sep = "&" if "?" in self.dlr_url else "?"
        sig = self.signer.sign(message_id, attempt)
        return f"{self.dlr_url}{sep}m={message_id}&a={attempt}&k={sig}&s=%d"

    def send(self, sms: OutboundSms) -> SendResult:
        """Hand one message to Kannel (see the module docstring for the outcomes)."""
        headers = dict(self._auth)
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        sender = sms.sender or self.sender
        if sender:
            headers["X-Kannel-From"] = sender
        if sms.encoding == "UCS-2":
            headers["X-Kannel-Coding"] = "2"
        if self.smsc_id:
            headers["X-Kannel-SMSC"] = self.smsc_id
        if self.dlr_url is not None:
            headers["X-Kannel-DLR-Mask"] = str(self.dlr_mask)
            headers["X-Kannel-DLR-Url"] = self.dlr_url_for(sms.message_id, sms.attempt)
        headers["X-Kannel-To"] = self._open(sms.phone)
        try:
            resp = self._client.post(self.sendsms_url, content=sms.text.encode("utf-8"),
                                     headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return SendResult(SendStatus.DOWN, f"cannot connect to Kannel ({type(exc).__name__})")
        except httpx.HTTPError as exc:
            return SendResult(SendStatus.IN_DOUBT, f"no answer from Kannel "
                                                   f"({type(exc).__name__})")
        finally:
            headers.clear()
        code, body = resp.status_code, _clean(resp.text)
        if 200 <= code < 300:
            return SendResult(SendStatus.ACCEPTED, body)
        if code in (401, 403):
            raise GatewayError(f"Kannel refused the sendsms credentials ({code}: {body}); "
                               "check the sendsms-user username/password and user-allow-ip")
        if code == 503:
            return SendResult(SendStatus.DOWN, f"Kannel unavailable ({code}: {body})")
        if 400 <= code < 500:
            return SendResult(SendStatus.FAILED, f"Kannel rejected it ({code}: {body})")
        return SendResult(SendStatus.RETRY, f"Kannel error ({code}: {body})")

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._client.close()
