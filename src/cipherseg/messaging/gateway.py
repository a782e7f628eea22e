"""The gateway interface: what the sending engine hands to an SMS gateway, and what it gets back.

The engine never sees a phone number. It passes a :class:`SealedPhone` — the vault
ciphertext, the context it was sealed under, and the masked display form — and the gateway
adapter opens it with the :data:`PhoneOpener` it was built with, immediately before the
hand-off to the SMS network, and drops it afterwards. Adapters never log the number, never
put it into an exception message and never store it (the outbox stores the masked form).

``send`` reports one of five outcomes (:class:`SendStatus`):

============  ===============================================================
``ACCEPTED``  the gateway took the message; a delivery report may follow
``DELIVERED`` final delivery already known (the outbox is its own handset)
``RETRY``     not sent this time (per-message trouble); retry with backoff
``DOWN``      the gateway is unreachable; nothing was sent; pause and retry
``FAILED``    refused for good (bad number, too long); do not retry
``IN_DOUBT``  the request may or may not have reached it (timeout mid-answer)
============  ===============================================================

>>> from cipherseg.pii import PiiKeyring, PiiVault
>>> vault = PiiVault(PiiKeyring.generate())
>>> sealed = SealedPhone(vault.encrypt("phone", "+8613812345678", context="c1"), "c1",
...                      "138****5678")
>>> vault_opener(vault)(sealed)
'+8613812345678'
>>> "8613812345678" in repr(sealed)
False
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cipherseg.errors import CipherSegError
from cipherseg.messaging.sms import Encoding


class GatewayError(CipherSegError):
    """The gateway is misconfigured (wrong credentials, unknown sender): sending stops."""


@dataclass(frozen=True, slots=True)
class SealedPhone:
    """An encrypted phone number, the vault context it belongs to, and its masked form.

    ``repr`` shows only the masked form.
    """

    ciphertext: bytes = field(repr=False)
    context: str = field(repr=False)
    masked: str = ""


#: Opens a sealed phone number (returns E.164); given to gateway adapters only.
PhoneOpener = Callable[[SealedPhone], str]


def vault_opener(vault: object, field_name: str = "phone") -> PhoneOpener:
    """A :data:`PhoneOpener` over a :class:`cipherseg.pii.PiiVault` (duck-typed: ``decrypt``).

    Only the gateway adapter should hold the returned function.
    """
    decrypt = vault.decrypt  # type: ignore[attr-defined]

    def open_phone(phone: SealedPhone) -> str:
        return str(decrypt(field_name, phone.ciphertext, context=phone.context))

    return open_phone


@dataclass(frozen=True, slots=True)
class OutboundSms:
    """One message as handed to a gateway (attempt numbers start at 1)."""

    message_id: int
    attempt: int
    phone: SealedPhone
    text: str
    encoding: Encoding
    parts: int
    sender: str | None = None


class SendStatus(enum.StrEnum):
    """Outcome of one :meth:`Gateway.send` (module docstring)."""

    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    RETRY = "retry"
    DOWN = "down"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a gateway said about one message; ``detail`` never holds a phone number."""

    status: SendStatus
    detail: str = ""


@runtime_checkable
class Gateway(Protocol):
    """An SMS gateway adapter.

    ``idempotent`` says whether sending the same ``(message_id, attempt)`` twice reaches the
    handset once (the outbox: yes; Kannel: no). The engine resends a message whose outcome
    a crash made unknown at once to an idempotent gateway, and otherwise only after a
    grace period in which no delivery report came.
    """

    name: str
    idempotent: bool

    def send(self, sms: OutboundSms) -> SendResult:
        """Hand one message over. Per-message problems are results, not exceptions;
        :class:`GatewayError` means the configuration is wrong and nothing can be sent."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
