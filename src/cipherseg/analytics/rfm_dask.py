"""RFM features from transaction files larger than memory, with Dask DataFrame.

The same features, drops and checks as the pandas path
(:func:`cipherseg.analytics.rfm.compute_rfm`), computed partition by partition from
partitioned CSV (plain or gzip) or Parquet files, or from a Dask DataFrame, so that no process
ever holds all transaction lines:

1. each partition is validated and reduced to (customer, invoice, time, amount, flags), with
   the pandas path's own parsers (dates, numbers, blank ids);
2. the snapshot (latest timestamp of *all* lines + 1 day, unless given) and the drop counts
   are reductions; last purchase and total spend are a group-by over kept lines;
3. frequency counts distinct (customer, invoice) pairs after a hash-partitioned
   ``drop_duplicates``, so an invoice split across partitions counts once.

Results equal the pandas path: recency, frequency, the index and the counts exactly; monetary
up to floating-point summation order (relative 1e-12). Run it on the *data owner's* Dask
scheduler (``scheduler=``), never on the compute centre's cluster: these are plaintext data.
Error messages name partitions and their row labels, not file lines; use
:func:`~cipherseg.analytics.rfm.read_transactions` on one file to find a bad line. Give
``date_format`` for text dates: each partition infers the format on its own otherwise.

>>> import pandas as pd, dask.dataframe as dd
>>> tx = pd.DataFrame({
...     "customer_id": ["a", "a", "b", None],
...     "invoice_id": ["1", "2", "3", "4"],
...     "timestamp": pd.to_datetime(["2025-01-01", "2025-01-10", "2025-01-05", "2025-01-06"]),
...     "amount": [10.0, 30.0, 5.0, 7.0]})
>>> result = compute_rfm_dask(dd.from_pandas(tx, npartitions=2), scheduler="sync")
>>> result.features  # doctest: +NORMALIZE_WHITESPACE
             recency  frequency  monetary
customer_id
a                1.0        2.0      20.0
b                6.0        1.0       5.0
>>> result.dropped_missing_customer, result.snapshot
(1, Timestamp('2025-01-11 00:00:00'))
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.base import compute

from cipherseg.analytics.rfm import (
    RFMColumns,
    RFMResult,
    _naive_utc_ns,
    _null_values,
    _parse_dates,
    _parse_numbers,
    _snapshot_ns,
)
from cipherseg.errors import ParameterError, ValidationError

__all__ = ["compute_rfm_dask", "read_transactions_dask"]

_NS_PER_DAY = 86_400 * 10**9
_C, _I, _T, _A = "customer", "invoice", "t_ns", "amount"
_DEFAULT_COLUMNS = RFMColumns()


def _expand(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    paths: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file()
                           and not f.name.startswith((".", "_")))
        else:
            found = sorted(glob.glob(str(p))) if any(ch in str(p) for ch in "*?[") else (
                [str(p)] if p.exists() else [])
        if not found:
            raise ValidationError(f"no transaction files at {str(item)!r}")
        paths.extend(found)
    return paths


def read_transactions_dask(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                           columns: RFMColumns = _DEFAULT_COLUMNS, *, fmt: str = "auto",
                           sep: str = ",", blocksize: str | int | None = "64MB",
                           encoding: str = "utf-8") -> dd.DataFrame:
    """Lazily read partitioned transactions: a directory, a glob, or a list of files.

    ``fmt``: ``"csv"``, ``"parquet"`` or ``"auto"`` (by file suffix). CSV columns are read as
    text (ids keep leading zeros), split into partitions of ``blocksize`` bytes; gzip files are
    one partition each (gzip cannot be split). Only the columns RFM needs are read.

    >>> read_transactions_dask("/nonexistent/*.csv")
    Traceback (most recent call last):
    ...
    cipherseg.errors.ValidationError: no transaction files at '/nonexistent/*.csv'
    """
    paths = _expand(source)
    if fmt == "auto":
        kinds = {("parquet" if p.endswith((".parquet", ".pq")) else "csv") for p in paths}
        if len(kinds) != 1:
            raise ParameterError(f"mixed CSV and Parquet inputs ({len(paths)} files); pass "
                                 "one kind, or fmt= to choose")
        fmt = kinds.pop()
    wanted = list(columns.needed)
    try:
        if fmt == "parquet":
            frame = dd.read_parquet(paths, columns=wanted)
        elif fmt == "csv":
            gz = any(p.endswith(".gz") for p in paths)
            frame = dd.read_csv(paths, sep=sep, usecols=wanted, dtype="str",
                                blocksize=None if gz else blocksize,
                                compression="gzip" if gz else None, encoding=encoding,
                                keep_default_na=False, na_values=[""])
        else:
            raise ParameterError(f"fmt must be 'csv', 'parquet' or 'auto', got {fmt!r}")
    except ValueError as exc:  # dask/pandas: a requested column is missing
        raise ValidationError(f"cannot read the transactions' columns {wanted}: {exc}. Name the "
                              "columns to use with RFMColumns") from exc
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValidationError(f"the transactions lack column(s) {missing}; found "
                              f"{list(frame.columns)}")
    selected: dd.DataFrame = frame[wanted]
    return selected


def _plain_dtype(dtype: Any) -> Any:
    """Categorical ids (Parquet dictionaries) as their values — group-bys then see only the
    ids present, not every category of the file — and text ids as pandas' default ``str``
    (the pandas path's dtype, whichever string flavour a file reader chose)."""
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    if isinstance(dtype, pd.StringDtype):
        dtype = pd.StringDtype(na_value=np.nan)
    return dtype


def _plain(col: pd.Series) -> pd.Series:
    dtype = _plain_dtype(col.dtype)
    return col if dtype == col.dtype else col.astype(dtype)


def _normalise(part: pd.DataFrame, columns: RFMColumns, date_format: str | None,
               partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """One partition → customer, invoice, t_ns, amount, has_customer, cancelled, with the
    pandas path's validation (errors name the partition)."""
    where = f"partition {partition_info['number']}" if partition_info else "a partition"
    try:
        dates = _parse_dates(part, columns.date, date_format)
        if columns.amount is not None:
            amount = _parse_numbers(part, columns.amount)
        else:
            quantity, price = columns.numeric
            amount = _parse_numbers(part, quantity) * _parse_numbers(part, price)
        invoice = part[columns.invoice]
        inv_missing = _null_values(invoice)
        if inv_missing.any():
            shown = ", ".join(str(v) for v in part.index[inv_missing][:5])
            raise ValidationError(f"column {columns.invoice!r}: {int(inv_missing.sum())} value(s) "
                                  f"missing at row label(s) {shown}; fix or remove these rows")
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None
    tz = str(dates.dt.tz) if isinstance(dates.dtype, pd.DatetimeTZDtype) else ""
    customer = _plain(part[columns.customer])
    invoice = _plain(invoice)
    has_customer = ~_null_values(customer)
    if pd.api.types.is_numeric_dtype(invoice.dtype):
        cancelled_invoice = np.zeros(len(part), dtype=bool)
    else:
        cancelled_invoice = np.asarray(invoice.astype("str").str.startswith("C"), dtype=bool)
    return pd.DataFrame({
        _C: customer.array, _I: invoice.array,  # keep the (Arrow) string arrays as they are
        _T: _naive_utc_ns(dates), _A: amount,
        "has_customer": has_customer, "cancelled": cancelled_invoice | (amount <= 0),
        "tz": pd.Categorical.from_codes(np.zeros(len(part), dtype=np.int8), categories=[tz]),
    }, index=part.index)


def compute_rfm_dask(transactions: dd.DataFrame | str | os.PathLike[str]
                     | Sequence[str | os.PathLike[str]],
                     columns: RFMColumns = _DEFAULT_COLUMNS, snapshot: pd.Timestamp | None = None,
                     *, date_format: str | None = None, fmt: str = "auto", sep: str = ",",
                     blocksize: str | int | None = "64MB", split_out: int = 1,
                     scheduler: Any = None) -> RFMResult:
    """RFM per customer from partitioned transactions (see the module documentation).

    ``transactions`` is a Dask DataFrame or files for :func:`read_transactions_dask`;
    ``split_out`` spreads the per-customer aggregates over that many partitions (for tens of
    millions of customers); ``scheduler`` is passed to :func:`dask.compute` (``"threads"``,
    ``"processes"``, ``"sync"`` or a ``distributed.Client`` of the owner's own cluster).
    """
    if isinstance(transactions, dd.DataFrame):
        frame = transactions
        missing = [c for c in columns.needed if c not in frame.columns]
        if missing:
            raise ValidationError(f"the transactions lack column(s) {missing}; found "
                                  f"{list(frame.columns)}. Name the columns with RFMColumns")
    else:
        frame = read_transactions_dask(transactions, columns, fmt=fmt, sep=sep,
                                       blocksize=blocksize)
    if snapshot is not None:
        try:
            snapshot = pd.Timestamp(snapshot)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"snapshot {snapshot!r} is not a timestamp") from exc
        if snapshot is pd.NaT:
            raise ParameterError("snapshot must be a timestamp, not NaT")

    meta = pd.DataFrame({
        _C: pd.Series([], dtype=_plain_dtype(frame[columns.customer].dtype)),
        _I: pd.Series([], dtype=_plain_dtype(frame[columns.invoice].dtype)),
        _T: pd.Series([], dtype=np.int64), _A: pd.Series([], dtype=np.float64),
        "has_customer": pd.Series([], dtype=bool), "cancelled": pd.Series([], dtype=bool),
        "tz": pd.Series([], dtype="category"),
    })
    norm = frame.map_partitions(_normalise, columns, date_format, meta=meta,
                                enforce_metadata=False)
    with_customer = norm[norm["has_customer"]]
    kept = with_customer[~with_customer["cancelled"]]
    per_customer = kept.groupby(_C).agg({_T: "max", _A: "sum"}, split_out=split_out)
    pairs = kept[[_C, _I]].drop_duplicates(split_out=split_out)
    frequency = pairs.groupby(_C).size(split_out=split_out)
    n_lines, n_with_customer, n_used = norm.shape[0], with_customer.shape[0], kept.shape[0]
    last_any = norm[_T].max()
    zones = norm["tz"].drop_duplicates()
    (agg, freq, n_lines, n_with_customer, n_used, last_any, zones) = compute(
        per_customer, frequency, n_lines, n_with_customer, n_used, last_any, zones,
        scheduler=scheduler)

    zone_set = {str(z) for z in zones.tolist()}
    if len(zone_set) > 1:
        raise ValidationError(f"timestamps mix time zones {sorted(zone_set)} across partitions; "
                              "convert them to one zone first")
    tz = zone_set.pop() or None if zone_set else None
    dropped_missing = int(n_lines - n_with_customer)
    dropped_cancelled = int(n_with_customer - n_used)
    if snapshot is None:
        if n_lines == 0:
            raise ValidationError("there are no transactions; RFM needs at least one")
        snapshot = pd.Timestamp(int(last_any), unit="ns")
        if tz is not None:
            snapshot = snapshot.tz_localize("UTC").tz_convert(tz)
        snapshot = snapshot + pd.Timedelta(days=1)
    snap_ns = _snapshot_ns(snapshot, tz)
    if n_used == 0:
        raise ValidationError(
            f"no transactions left for RFM: {n_lines} line(s), of which {dropped_missing} lack "
            f"a customer id and {dropped_cancelled} are cancelled or have an amount ≤ 0")
    agg = agg.sort_index()
    last = agg[_T].to_numpy(dtype=np.int64)
    if int(last.max()) > snap_ns:
        late = int((last > snap_ns).sum())
        raise ValidationError(
            f"{late} customer(s) have used transactions later than the snapshot {snapshot}; "
            "pass a later snapshot or drop those transactions first")
    recency = ((snap_ns - last) // _NS_PER_DAY).astype(np.float64)
    frequency = freq.reindex(agg.index).to_numpy(dtype=np.float64)
    index = pd.Index(agg.index, name=columns.customer)
    features = pd.DataFrame({"recency": recency, "frequency": frequency,
                             "monetary": agg[_A].to_numpy(dtype=np.float64) / frequency},
                            index=index)
    return RFMResult(features=features, snapshot=snapshot,
                     dropped_missing_customer=dropped_missing,
                     dropped_cancelled=dropped_cancelled, n_transactions_used=int(n_used))
