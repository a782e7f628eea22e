"""Behavioural features from purchase categories: each customer's share of spend in the
data owner's top-N categories.

The owner ranks its categories by total spend (over the rows given, i.e. the time window) and
keeps the ``top_n`` largest (ties broken by name); for each customer, the share of its spend
in each of them is a number in [0, 1]. Lines with an amount ≤ 0 (returns, cancellations) are
left out, as RFM leaves them out; lines without a category count in the customer's total
spend but in no share. The shares are computed and encoded by the owner like RFM (``log1p``,
standardised, quantised) before encryption; the compute centre sees only ciphertexts.

>>> import pandas as pd
>>> tx = pd.DataFrame({"customer": ["a", "a", "b", "b"], "amount": [30.0, 10.0, 5.0, 15.0],
...                    "category": ["food", "toys", "food", None]})
>>> category_shares(tx, top_n=1)  # doctest: +NORMALIZE_WHITESPACE
          share:food
customer
a               0.75
b               0.25
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cipherseg.errors import ValidationError

__all__ = ["MAX_TOP_N", "PREFIX", "category_shares", "share_column"]

PREFIX = "share:"
MAX_TOP_N = 8


def share_column(category: str) -> str:
    """The feature name of a category's share."""
    return f"{PREFIX}{category}"


def category_shares(tx: pd.DataFrame, *, top_n: int, customer: str = "customer",
                    amount: str = "amount", category: str = "category") -> pd.DataFrame:
    """Per customer (sorted index), the share of spend in each of the top-N categories."""
    if not 1 <= top_n <= MAX_TOP_N:
        raise ValidationError(f"the number of top categories must be between 1 and "
                              f"{MAX_TOP_N}")
    lines = tx.loc[tx[amount].to_numpy(np.float64) > 0, [customer, amount, category]]
    if lines.empty:
        raise ValidationError("there are no purchases to compute category shares from")
    named = lines[lines[category].notna() & (lines[category].astype("str").str.strip() != "")]
    if named.empty:
        raise ValidationError("no purchase has a category: upload transactions with their "
                              "category column filled, or leave out the category features")
    spend = named.groupby(category)[amount].sum()
    ranked = sorted(spend.items(), key=lambda kv: (-float(kv[1]), str(kv[0])))
    top = [str(c) for c, _ in ranked[:top_n]]
    total = lines.groupby(customer)[amount].sum()
    per_cat = (named[named[category].astype("str").isin(top)]
               .pivot_table(index=customer, columns=category, values=amount, aggfunc="sum",
                            fill_value=0.0))
    per_cat.columns = [str(c) for c in per_cat.columns]
    per_cat = per_cat.reindex(index=total.index, columns=top, fill_value=0.0).fillna(0.0)
    shares = per_cat.div(total, axis=0).clip(0.0, 1.0)
    shares.columns = [share_column(c) for c in top]
    shares.index.name = customer
    return shares.sort_index().astype(np.float64)
