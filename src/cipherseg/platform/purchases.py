"""Purchase records at rest: each transaction's date, amount and category are one AES-256-GCM
ciphertext (``transactions.payload_ct``) under the platform's PII data key — the vault and the
key rotation that protect phone numbers (:mod:`cipherseg.pii`, ``cipherseg pii rotate-key``).

The associated data binds a ciphertext to its owner account and transaction id, so a
ciphertext copied to another row fails to decrypt instead of moving a purchase. What stays in
clear: which customer (by foreign key) made how many purchases, and the transaction ids
the owner uploaded (needed to refuse duplicates). Purchases are decrypted only where the
owner's data is computed on: the owner's segmentation jobs (RFM, category shares), a joint
job's owner process, and the campaign lift measurement (aggregates of the owner's customers).

>>> from datetime import date
>>> from decimal import Decimal
>>> from cipherseg.pii.keys import PiiKeyring
>>> from cipherseg.pii.vault import PiiVault
>>> vault = PiiVault(PiiKeyring.generate())
>>> blob = seal(vault, 7, "T1", date(2025, 6, 30), Decimal("12.50"), "food")
>>> b"12.5" in blob or b"food" in blob
False
>>> unseal(vault, 7, "T1", blob)
(datetime.date(2025, 6, 30), 12.5, 'food')
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from cipherseg.errors import CiphertextError
from cipherseg.pii.vault import PiiVault
from cipherseg.platform.models import Customer, Transaction

FIELD = "purchase"
COLUMNS = ["customer", "invoice", "date", "amount", "category"]


def context(owner_id: int, external_id: str) -> str:
    """The associated data's record part: owner account and transaction id."""
    return f"{owner_id}/{external_id}"


def seal(vault: PiiVault, owner_id: int, external_id: str, day: date, amount: Decimal | float,
         category: str | None) -> bytes:
    """The ciphertext of one purchase."""
    body = json.dumps([day.isoformat(), str(amount), category], separators=(",", ":"))
    return vault.encrypt(FIELD, body, context=context(owner_id, external_id))


def unseal(vault: PiiVault, owner_id: int, external_id: str, blob: bytes
           ) -> tuple[date, float, str | None]:
    """Date, amount and category of one purchase."""
    body = vault.decrypt(FIELD, blob, context=context(owner_id, external_id))
    try:
        day, amount, category = json.loads(body)
        return date.fromisoformat(day), float(amount), category
    except (ValueError, TypeError) as exc:
        raise CiphertextError("a purchase record decrypted to something unreadable; restore "
                              "the row from backup") from exc


def frame(vault: PiiVault, rows: Iterable[tuple[str, int, str, bytes]]) -> pd.DataFrame:
    """``(customer, owner id, transaction id, ciphertext)`` rows as a transactions frame
    (customer, invoice, date, amount, category)."""
    out: list[tuple[str, str, date, float, str | None]] = []
    for customer, owner_id, external_id, blob in rows:
        day, amount, category = unseal(vault, owner_id, external_id, blob)
        out.append((customer, external_id, day, amount, category))
    df = pd.DataFrame(out, columns=COLUMNS)
    df["date"] = pd.to_datetime(df["date"])
    df["amount"] = df["amount"].astype(np.float64)
    return df


def owner_transactions(vault: PiiVault, session: Session, owner_id: int) -> pd.DataFrame:
    """One owner's purchases keyed by customer pseudonym, decrypted (the owner's jobs)."""
    stmt = (select(Customer.pseudonym, Transaction.owner_id, Transaction.external_id,
                   Transaction.payload_ct)
            .join(Customer, Customer.id == Transaction.customer_id)
            .where(Transaction.owner_id == owner_id)
            .execution_options(yield_per=20_000))
    return frame(vault, session.execute(stmt))
