"""Customers as the sending engine sees them: sealed numbers from the ``customers`` table."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select

from cipherseg.messaging import Recipient, SealedPhone
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Customer, SegmentMember

_CHUNK = 500


class PlatformRecipients:
    """:class:`~cipherseg.messaging.recipients.RecipientSource` over ``customers``.

    The number stays sealed (``phone_ct`` with the customer's pseudonym as context); the
    first name is decrypted only when ``with_names`` (the sending worker renders with it).
    """

    def __init__(self, ctx: PlatformContext, *, with_names: bool) -> None:
        self.ctx = ctx
        self.with_names = with_names

    def _recipient(self, row: Any) -> Recipient:
        name = None
        if self.with_names and row.first_name_ct is not None:
            name = self.ctx.vault.decrypt("first_name", row.first_name_ct,
                                          context=row.pseudonym)
        return Recipient(ref=str(row.id),
                         phone=SealedPhone(row.phone_ct, row.pseudonym, row.phone_masked),
                         phone_key=row.phone_hmac, consent=bool(row.consent),
                         timezone=row.timezone or self.ctx.settings.default_timezone,
                         first_name=name, customer_id=row.id)

    _COLUMNS = (Customer.id, Customer.pseudonym, Customer.phone_ct, Customer.phone_masked,
                Customer.phone_hmac, Customer.consent, Customer.timezone,
                Customer.first_name_ct)

    def lookup(self, refs: Sequence[str]) -> Mapping[str, Recipient]:
        """The customers among ``refs`` (customer ids as text) that still exist."""
        ids = [int(r) for r in refs if r.isdigit()]
        out: dict[str, Recipient] = {}
        with self.ctx.sessions() as s:
            for i in range(0, len(ids), _CHUNK):
                for row in s.execute(select(*self._COLUMNS)
                                     .where(Customer.id.in_(ids[i:i + _CHUNK]))):
                    out[str(row.id)] = self._recipient(row)
        return out

    def segment(self, job_id: int, position: int) -> Iterator[Recipient]:
        """Every customer labelled ``position`` by segmentation ``job_id``."""
        last = 0
        while True:
            with self.ctx.sessions() as s:
                rows = list(s.execute(
                    select(*self._COLUMNS).join(SegmentMember,
                                                SegmentMember.customer_id == Customer.id)
                    .where(SegmentMember.job_id == job_id,
                           SegmentMember.segment_index == position, Customer.id > last)
                    .order_by(Customer.id).limit(_CHUNK)))
            if not rows:
                return
            for row in rows:
                yield self._recipient(row)
            last = rows[-1].id


class WithExtra:
    """A recipient source plus a few recipients held in memory (test messages)."""

    def __init__(self, base: Any, extra: Sequence[Recipient]) -> None:
        self.base = base
        self.extra = {r.ref: r for r in extra}

    def lookup(self, refs: Sequence[str]) -> Mapping[str, Recipient]:
        found = dict(self.base.lookup([r for r in refs if r not in self.extra]))
        found.update({r: self.extra[r] for r in refs if r in self.extra})
        return found
