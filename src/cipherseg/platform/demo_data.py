"""Deterministic demo data in the upload templates' format (customers and transactions).

Five behaviour groups (loyal big spenders, regulars, occasional, lapsed, new) so that a
segmentation finds visible structure. Phone numbers are synthetic Chinese mobile numbers in
the 138/139/150/186 ranges; they are random, not real people.

>>> customers, transactions = demo_csv(n_customers=20, seed=1)
>>> customers.splitlines()[0]
b'customer_id,phone,consent,first_name,timezone'
>>> len(customers.splitlines()), transactions.splitlines()[0]
(21, b'transaction_id,customer_id,date,amount,category')
"""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

import numpy as np

#: The last day of the demo year; every transaction date is on or before it.
REFERENCE_DATE = date(2025, 6, 30)
CATEGORIES = ("apparel", "food", "electronics", "beauty", "home", "sports")
FIRST_NAMES = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu",
               "Xu", "Sun", "Hu", "Zhu", "Gao", "Lin", "He", "Guo", "Ma", "Luo")
# (share, purchases per year, mean amount, days since last purchase range)
GROUPS = (
    (0.15, 40, 620.0, (0, 20)),
    (0.30, 14, 180.0, (5, 60)),
    (0.25, 4, 90.0, (30, 150)),
    (0.20, 2, 60.0, (200, 360)),
    (0.10, 2, 240.0, (0, 30)),
)
PREFIXES = ("138", "139", "150", "186")


def demo_rows(n_customers: int = 600, seed: int = 7
              ) -> tuple[list[list[str]], list[list[str]]]:
    """Customer rows and transaction rows (without headers), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    shares = np.array([g[0] for g in GROUPS])
    groups = rng.choice(len(GROUPS), size=n_customers, p=shares / shares.sum())
    customers: list[list[str]] = []
    transactions: list[list[str]] = []
    tid = 0
    used: set[str] = set()
    for i in range(n_customers):
        cid = f"C{i + 1:05d}"
        while True:
            phone = PREFIXES[int(rng.integers(len(PREFIXES)))] + \
                f"{int(rng.integers(0, 10**8)):08d}"
            if phone not in used:
                used.add(phone)
                break
        consent = "yes" if rng.random() < 0.9 else "no"
        name = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))] if rng.random() < 0.8 else ""
        customers.append([cid, phone, consent, name, "Asia/Shanghai"])
        _share, per_year, mean_amount, (rmin, rmax) = GROUPS[int(groups[i])]
        n_tx = max(1, int(rng.poisson(per_year)))
        last = int(rng.integers(rmin, rmax + 1))
        span = 365 - last
        offsets = sorted({last, *(last + int(x) for x in rng.integers(0, max(span, 1),
                                                                     size=n_tx - 1))})
        for off in offsets:
            tid += 1
            amount = max(1.0, float(rng.gamma(4.0, mean_amount / 4.0)))
            transactions.append([f"T{tid:07d}", cid,
                                 (REFERENCE_DATE - timedelta(days=off)).isoformat(),
                                 f"{amount:.2f}", CATEGORIES[int(rng.integers(len(CATEGORIES)))]])
    return customers, transactions


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def demo_csv(n_customers: int = 600, seed: int = 7) -> tuple[bytes, bytes]:
    """The demo customers.csv and transactions.csv as bytes."""
    customers, transactions = demo_rows(n_customers, seed)
    return (_csv(["customer_id", "phone", "consent", "first_name", "timezone"], customers),
            _csv(["transaction_id", "customer_id", "date", "amount", "category"], transactions))
