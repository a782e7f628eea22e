"""Recipients as the sending engine sees them: sealed numbers, pseudonyms, consent, time zone.

A :class:`Recipient` never holds a phone number in clear: it carries the vault ciphertext
(:class:`~cipherseg.messaging.gateway.SealedPhone`, opened only by the gateway adapter), a
keyed pseudonym of the number (``phone_key``: opt-outs, suppression and frequency caps
match on it) and the masked form for display. Where recipients come from is the caller's
business: the platform reads its customers table; :class:`StaticRecipients` holds a list in
memory (imports, the benchmark, tests).

>>> from cipherseg.pii import PiiKeyring, PiiVault
>>> vault = PiiVault(PiiKeyring.generate())
>>> r = seal_recipient(vault, "c1", "+8613812345678", consent=True, first_name="Li",
...                    region="CN")
>>> r.phone.masked, len(r.phone_key), "13812345678" in repr(r)
('138****5678', 32, False)
>>> StaticRecipients([r]).lookup(["c1", "c2"]).keys()
dict_keys(['c1'])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cipherseg.messaging.gateway import SealedPhone
from cipherseg.pii import PiiVault, mask_phone, normalise_phone

#: Namespace of the keyed pseudonym of a phone number (``PiiVault.pseudonym``).
PHONE_KEY_NAMESPACE = "phone"


@dataclass(frozen=True, slots=True)
class Recipient:
    """One customer as a campaign addresses them (``first_name`` may be empty)."""

    ref: str
    phone: SealedPhone
    phone_key: str
    consent: bool
    timezone: str | None = None
    first_name: str | None = field(default=None, repr=False)
    customer_id: int | None = None


class RecipientSource(Protocol):
    """Looks recipients up by reference at send time (erased customers are simply absent)."""

    def lookup(self, refs: Sequence[str]) -> Mapping[str, Recipient]:
        """The recipients among ``refs`` that still exist."""
        ...


class StaticRecipients:
    """A :class:`RecipientSource` over recipients held in memory.

    >>> StaticRecipients([]).lookup(["x"])
    {}
    """

    def __init__(self, recipients: Iterable[Recipient]) -> None:
        self._by_ref = {r.ref: r for r in recipients}

    def __len__(self) -> int:
        return len(self._by_ref)

    def __iter__(self) -> Iterator[Recipient]:
        return iter(self._by_ref.values())

    def lookup(self, refs: Sequence[str]) -> Mapping[str, Recipient]:
        """The recipients among ``refs``."""
        return {ref: self._by_ref[ref] for ref in refs if ref in self._by_ref}

    def remove(self, ref: str) -> None:
        """Forget a recipient (erasure)."""
        self._by_ref.pop(ref, None)


def phone_key(vault: PiiVault, e164: str) -> str:
    """The keyed pseudonym of an E.164 number, as stored for opt-outs and caps.

    >>> from cipherseg.pii import PiiKeyring
    >>> v = PiiVault(PiiKeyring.generate())
    >>> phone_key(v, "+8613812345678") == v.pseudonym("phone", "+8613812345678")
    True
    """
    return vault.pseudonym(PHONE_KEY_NAMESPACE, e164)


def seal_recipient(vault: PiiVault, ref: str, raw_phone: str, *, consent: bool,
                   region: str, timezone: str | None = None,
                   first_name: str | None = None,
                   customer_id: int | None = None) -> Recipient:
    """Normalise and encrypt a phone number into a :class:`Recipient` (context = ``ref``)."""
    e164 = normalise_phone(raw_phone, region=region)
    sealed = SealedPhone(vault.encrypt("phone", e164, context=ref), ref,
                         mask_phone(e164, region=region))
    return Recipient(ref=ref, phone=sealed, phone_key=phone_key(vault, e164), consent=consent,
                     timezone=timezone, first_name=first_name, customer_id=customer_id)
