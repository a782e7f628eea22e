"""RFM features (recency, frequency, monetary) from raw transaction lines.

The data owner turns its transaction lines into one row of three features per customer:

* **Recency**: whole days from the customer's last purchase to the *snapshot* (floor of the
  time difference in days). The snapshot defaults to the latest timestamp in the input plus
  one day, as is customary for the Online Retail data set.
* **Frequency**: number of distinct invoices of the customer.
* **Monetary**: average spend per invoice = total spend / frequency.

Lines without a customer id are dropped and counted; so are cancelled lines (an invoice id
starting with ``"C"``, as in the Online Retail data set, or a line amount ≤ 0). Nothing is
silently coerced: unparseable dates or numbers raise :class:`~cipherseg.errors.ValidationError`
naming the offending rows.

:class:`RFMScaler` (optional log1p, then per-column standardisation) belongs to the owner and is
part of the released model, so centroids can be shown in business units again;
:func:`segment_names` gives those centroids plain-language names.

>>> import pandas as pd
>>> tx = pd.DataFrame({
...     "customer_id": ["a", "a", "b", None],
...     "invoice_id": ["1", "2", "3", "4"],
...     "timestamp": pd.to_datetime(["2025-01-01", "2025-01-10", "2025-01-05", "2025-01-06"]),
...     "amount": [10.0, 30.0, 5.0, 7.0]})
>>> result = compute_rfm(tx)
>>> result.features  # doctest: +NORMALIZE_WHITESPACE
             recency  frequency  monetary
customer_id
a                1.0        2.0      20.0
b                6.0        1.0       5.0
>>> result.dropped_missing_customer, result.snapshot
(1, Timestamp('2025-01-11 00:00:00'))
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from cipherseg.errors import ParameterError, ValidationError

__all__ = [
    "FEATURES",
    "RFMColumns",
    "RFMResult",
    "RFMScaler",
    "compute_rfm",
    "read_transactions",
    "segment_names",
]

#: Column names of the feature table, in order.
FEATURES = ("recency", "frequency", "monetary")
#: How many bad rows an error message quotes.
_MAX_QUOTED = 5
_NS_PER_DAY = 86_400 * 10**9
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class RFMColumns:
    """Names of the transaction columns RFM needs.

    Give either ``amount`` (the line's total) or both ``quantity`` and ``price`` (unit
    price; the line amount is their product) — exactly one of the two.

    >>> RFMColumns().needed
    ('customer_id', 'invoice_id', 'timestamp', 'amount')
    >>> RFMColumns(customer="CustomerID", invoice="InvoiceNo", date="InvoiceDate",
    ...            amount=None, quantity="Quantity", price="UnitPrice").needed
    ('CustomerID', 'InvoiceNo', 'InvoiceDate', 'Quantity', 'UnitPrice')
    """

    customer: str = "customer_id"
    invoice: str = "invoice_id"
    date: str = "timestamp"
    amount: str | None = "amount"
    quantity: str | None = None
    price: str | None = None

    def __post_init__(self) -> None:
        for field in ("customer", "invoice", "date", "amount", "quantity", "price"):
            value = getattr(self, field)
            if value is None and field in ("amount", "quantity", "price"):
                continue
            if not isinstance(value, str) or not value:
                raise ParameterError(f"RFMColumns.{field} must be a non-empty column name, "
                                     f"got {value!r}")
        has_amount = self.amount is not None
        has_qp = self.quantity is not None or self.price is not None
        if has_amount and has_qp:
            raise ParameterError(
                "RFMColumns: give either amount or quantity and price, not both "
                f"(amount={self.amount!r}, quantity={self.quantity!r}, price={self.price!r}); "
                "pass amount=None when the line amount is quantity × unit price")
        if not has_amount and (self.quantity is None or self.price is None):
            raise ParameterError(
                "RFMColumns: without an amount column both quantity and price are needed "
                f"(quantity={self.quantity!r}, price={self.price!r})")
        if len(set(self.needed)) != len(self.needed):
            raise ParameterError(f"RFMColumns: one column cannot play two roles: {self.needed}")

    @property
    def needed(self) -> tuple[str, ...]:
        """The columns read from the transactions, in order."""
        money = (self.amount,) if self.amount is not None else (self.quantity, self.price)
        return (self.customer, self.invoice, self.date, *(c for c in money if c is not None))

    @property
    def numeric(self) -> tuple[str, ...]:
        """The columns that must hold numbers."""
        return self.needed[3:]


@dataclass(frozen=True)
class RFMResult:
    """RFM features per customer and what was dropped on the way.

    ``features`` is indexed by customer id (sorted) with float64 columns ``recency`` (days),
    ``frequency`` (distinct invoices) and ``monetary`` (average spend per invoice).
    ``n_transactions_used`` counts the transaction lines that went into the features.

    >>> import pandas as pd
    >>> tx = pd.DataFrame({"customer_id": ["a"], "invoice_id": ["C1"],
    ...                    "timestamp": [pd.Timestamp("2025-01-01")], "amount": [-3.0]})
    >>> compute_rfm(pd.concat([tx, tx.assign(invoice_id="2", amount=4.0)])).dropped_cancelled
    1
    """

    features: pd.DataFrame
    snapshot: pd.Timestamp
    dropped_missing_customer: int
    dropped_cancelled: int
    n_transactions_used: int


# --------------------------------------------------------------------------- parsing helpers


def _quote_bad(where: str, column: str, labels: pd.Index, values: pd.Series, n_bad: int,
               hint: str) -> ValidationError:
    shown = ", ".join(f"{lab} ({val!r})" for lab, val in
                      zip(labels[:_MAX_QUOTED], values.iloc[:_MAX_QUOTED], strict=True))
    more = f" and {n_bad - _MAX_QUOTED} more" if n_bad > _MAX_QUOTED else ""
    return ValidationError(f"column {column!r}: {n_bad} value(s) {hint} at {where} "
                           f"{shown}{more}; fix or remove these rows")


def _row_kind(frame: pd.DataFrame) -> str:
    return "file line(s)" if frame.index.name == "line" else "row(s) with index label"


def _null_values(col: pd.Series) -> np.ndarray:
    """Missing values, counting empty or blank strings as missing."""
    isna: np.ndarray = col.isna().to_numpy(dtype=bool, copy=True)
    if pd.api.types.is_string_dtype(col.dtype) or col.dtype == object:
        as_str = col.astype("str")
        isna |= (as_str.str.strip() == "").fillna(True).to_numpy(dtype=bool)
    return isna


def _parse_dates(frame: pd.DataFrame, column: str, date_format: str | None) -> pd.Series:
    """The column as datetime64 (any unit, tz kept), or ValidationError naming bad rows."""
    col = frame[column]
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        parsed = col
    else:
        if pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
            raise ValidationError(
                f"column {column!r} holds {col.dtype} values, not dates; give dates as "
                "datetime64 or as text such as '2025-01-31 14:05:00'")
        if date_format is not None:
            parsed = pd.to_datetime(col, errors="coerce", format=date_format)
        else:
            parsed = pd.to_datetime(col, errors="coerce")
            if parsed.isna().any() and col.notna().any():
                iso = pd.to_datetime(col, errors="coerce", format="ISO8601")
                if iso.isna().sum() < parsed.isna().sum():
                    parsed = iso
    bad = parsed.isna().to_numpy()
    if bad.any():
        fmt = f"format {date_format!r}" if date_format else "an inferred date format"
        raise _quote_bad(_row_kind(frame), column, frame.index[bad], col[bad], int(bad.sum()),
                         f"missing or not a date in {fmt} (pass date_format to read_transactions "
                         "if the dates use another one)")
    try:
        return parsed.dt.as_unit("ns")
    except (OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise ValidationError(f"column {column!r}: dates outside 1677–2262 are not supported "
                              f"({exc})") from exc


def _parse_numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column as finite float64, or ValidationError naming bad rows."""
    col = frame[column]
    if pd.api.types.is_bool_dtype(col.dtype):
        raise ValidationError(f"column {column!r} holds booleans, not numbers")
    values: np.ndarray
    if pd.api.types.is_numeric_dtype(col.dtype):
        values = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise _quote_bad(_row_kind(frame), column, frame.index[bad], col[bad], int(bad.sum()),
                         "missing, infinite or not a number (use '.' as decimal point and no "
                         "thousands separators)")
    return values


def _factorize(col: pd.Series, *, sort: bool) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (-1 for missing or blank) and the distinct values (perhaps unused ones)."""
    if isinstance(col.dtype, pd.CategoricalDtype):  # codes are already there
        codes = np.asarray(col.cat.codes, dtype=np.int64)
        uniques = pd.Index(col.cat.categories)
        if sort and not uniques.is_monotonic_increasing:
            try:
                order = np.asarray(uniques.argsort())
            except TypeError:
                order = np.arange(len(uniques))
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            codes = np.where(codes >= 0, rank[np.maximum(codes, 0)], -1)
            uniques = uniques[order]
    else:
        try:
            codes, uniques = pd.factorize(col, sort=sort)
        except TypeError:  # mixed types that cannot be ordered
            codes, uniques = pd.factorize(col, sort=False)
        uniques = pd.Index(uniques)
    if pd.api.types.is_string_dtype(uniques.dtype) or uniques.dtype == object:
        blank = np.asarray(uniques.astype("str").str.strip() == "", dtype=bool)
        if blank.any():
            codes = np.where((codes >= 0) & blank[np.maximum(codes, 0)], -1, codes)
    return np.asarray(codes, dtype=np.int64), uniques


# --------------------------------------------------------------------------- reading


def _is_gzip(source: Any) -> bool:
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as fh:
            return fh.read(2) == _GZIP_MAGIC
    if isinstance(source, io.TextIOBase):
        return False
    if hasattr(source, "read") and hasattr(source, "seek") and hasattr(source, "tell"):
        pos = source.tell()
        head = source.read(2)
        source.seek(pos)
        return isinstance(head, bytes) and head == _GZIP_MAGIC
    return False


def read_transactions(path_or_buffer: str | os.PathLike[str] | IO[Any],
                      columns: RFMColumns = RFMColumns(), *, sep: str = ",",
                      date_format: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a transactions CSV (plain or gzip-compressed) and validate it strictly.

    Only the columns named by ``columns`` are kept; a line with more fields than the header
    is refused. Customer and invoice ids are kept as text
    (so ``"00123"`` stays ``"00123"``), dates are parsed (``date_format`` in ``strftime``
    notation, inferred when omitted), amounts / quantities / prices must be plain numbers. The
    returned frame is indexed by the file line number (header = line 1; lines empty in every
    required column are skipped), so any later error can point at the file. Line numbers
    assume no quoted field spans several lines.

    Raises :class:`~cipherseg.errors.ValidationError` if a column is missing (naming the
    columns found) or if any date or number does not parse (naming the first bad lines).

    >>> import io
    >>> csv = io.StringIO("customer_id,invoice_id,timestamp,amount\\n"
    ...                   "007,1,2025-01-01 10:00,9.5\\n,2,2025-01-02 11:00,3\\n")
    >>> tx = read_transactions(csv)
    >>> tx["customer_id"].tolist(), tx.index.tolist()
    (['007', nan], [2, 3])
    """
    wanted = columns.needed
    compression = "gzip" if _is_gzip(path_or_buffer) else "infer"
    try:
        # All columns are read (not usecols): only then does pandas refuse lines with more
        # fields than the header instead of silently dropping the surplus.
        frame = pd.read_csv(path_or_buffer, sep=sep, dtype="str",
                            skip_blank_lines=False, compression=compression,
                            encoding=encoding, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError as exc:
        raise ValidationError(f"the transactions file is empty; expected a header line with "
                              f"the columns {list(wanted)}") from exc
    except pd.errors.ParserError as exc:
        raise ValidationError(f"the transactions file is not valid CSV: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the transactions file is not {encoding} text ({exc}); pass "
                              "the file's encoding, e.g. encoding='latin-1'") from exc
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ValidationError(f"the transactions lack column(s) {missing}; found "
                              f"{list(frame.columns)}. Name the columns to use with RFMColumns "
                              "(CLI: --customer-col, --invoice-col, --date-col, --amount-col "
                              "or --quantity-col and --price-col)")
    frame = frame.loc[:, list(wanted)]
    frame.index = pd.RangeIndex(2, len(frame) + 2, name="line")
    frame = frame[frame.notna().any(axis=1).to_numpy()]
    frame[columns.date] = _parse_dates(frame, columns.date, date_format)
    for name in columns.numeric:
        frame[name] = _parse_numbers(frame, name)
    invoice_missing = _null_values(frame[columns.invoice])
    if invoice_missing.any():
        col = frame[columns.invoice]
        raise _quote_bad(_row_kind(frame), columns.invoice, frame.index[invoice_missing],
                         col[invoice_missing], int(invoice_missing.sum()), "missing")
    return frame


# --------------------------------------------------------------------------- RFM


def _naive_utc_ns(dates: pd.Series) -> np.ndarray:
    if isinstance(dates.dtype, pd.DatetimeTZDtype):
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    ns: np.ndarray = dates.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return ns


def _snapshot_ns(snapshot: pd.Timestamp, tz: Any) -> int:
    if (snapshot.tz is None) != (tz is None):
        raise ParameterError(
            f"snapshot {snapshot} and the transaction timestamps must both be timezone-aware "
            f"or both naive (timestamps' timezone: {tz})")
    if snapshot.tz is not None:
        snapshot = snapshot.tz_convert("UTC").tz_localize(None)
    return int(snapshot.as_unit("ns").value)


def compute_rfm(transactions: pd.DataFrame, columns: RFMColumns = RFMColumns(),
                snapshot: pd.Timestamp | None = None) -> RFMResult:
    """Recency, frequency and monetary value per customer (vectorised; millions of lines/s).

    Lines without a customer id are dropped first (``dropped_missing_customer``); of the rest,
    lines of invoices whose id starts with ``"C"`` or whose amount is ≤ 0 are dropped
    (``dropped_cancelled``). Every row is validated, dropped or not: a missing invoice id, date
    or amount raises :class:`~cipherseg.errors.ValidationError`. Dates given as text are
    parsed strictly. The snapshot defaults to the latest timestamp in the input plus one day;
    a given snapshot must not precede any used transaction.

    >>> import pandas as pd
    >>> tx = pd.DataFrame({"cust": ["x", "x", "y"], "inv": [1, 1, 2],
    ...                    "when": ["2025-03-01 09:00", "2025-03-01 09:00", "2025-03-02 18:00"],
    ...                    "qty": [2, 1, 1], "price": [5.0, 4.0, 1.5]})
    >>> cols = RFMColumns(customer="cust", invoice="inv", date="when", amount=None,
    ...                   quantity="qty", price="price")
    >>> compute_rfm(tx, cols, snapshot=pd.Timestamp("2025-03-10")).features
    ... # doctest: +NORMALIZE_WHITESPACE
          recency  frequency  monetary
    cust
    x         8.0        1.0      14.0
    y         7.0        1.0       1.5
    """
    if not isinstance(transactions, pd.DataFrame):
        raise ValidationError(f"transactions must be a pandas DataFrame, got "
                              f"{type(transactions).__name__}; read files with read_transactions")
    missing = [c for c in columns.needed if c not in transactions.columns]
    if missing:
        raise ValidationError(f"the transactions lack column(s) {missing}; found "
                              f"{list(transactions.columns)}. Name the columns with RFMColumns")
    if snapshot is not None:
        try:
            snapshot = pd.Timestamp(snapshot)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"snapshot {snapshot!r} is not a timestamp") from exc
        if snapshot is pd.NaT:
            raise ParameterError("snapshot must be a timestamp, not NaT")

    dates = _parse_dates(transactions, columns.date, None)
    tz = dates.dt.tz
    if columns.amount is not None:
        amount = _parse_numbers(transactions, columns.amount)
    else:
        quantity, price = columns.numeric
        amount = _parse_numbers(transactions, quantity) * _parse_numbers(transactions, price)

    inv_codes, inv_uniques = _factorize(transactions[columns.invoice], sort=False)
    inv_missing = inv_codes < 0
    if inv_missing.any():
        raise _quote_bad(_row_kind(transactions), columns.invoice,
                         transactions.index[inv_missing],
                         transactions[columns.invoice][inv_missing], int(inv_missing.sum()),
                         "missing")
    if pd.api.types.is_numeric_dtype(inv_uniques.dtype):
        cancelled_invoice = np.zeros(len(inv_uniques), dtype=bool)
    else:
        cancelled_invoice = np.asarray(inv_uniques.astype("str").str.startswith("C"), dtype=bool)

    cust_codes, cust_uniques = _factorize(transactions[columns.customer], sort=True)
    has_customer = cust_codes >= 0
    cancelled = cancelled_invoice[inv_codes] | (amount <= 0)
    keep = has_customer & ~cancelled
    dropped_missing = int((~has_customer).sum())
    dropped_cancelled = int((has_customer & cancelled).sum())
    n_used = int(keep.sum())

    t_ns = _naive_utc_ns(dates)
    if snapshot is None:
        if len(t_ns) == 0:
            raise ValidationError("there are no transactions; RFM needs at least one")
        last_any = pd.Timestamp(int(t_ns.max()), unit="ns")
        if tz is not None:
            last_any = last_any.tz_localize("UTC").tz_convert(tz)
        snapshot = last_any + pd.Timedelta(days=1)
    snap_ns = _snapshot_ns(snapshot, tz)
    if n_used == 0:
        raise ValidationError(
            f"no transactions left for RFM: {len(transactions)} line(s), of which "
            f"{dropped_missing} lack a customer id and {dropped_cancelled} are cancelled or "
            "have an amount ≤ 0")

    c = cust_codes[keep]
    counts = np.bincount(c, minlength=len(cust_uniques))
    present = counts > 0
    remap = np.cumsum(present) - 1
    c = remap[c]
    n_customers = int(present.sum())

    last = np.full(n_customers, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, c, t_ns[keep])
    if int(last.max()) > snap_ns:
        late = int((t_ns[keep] > snap_ns).sum())
        raise ValidationError(
            f"{late} used transaction(s) are later than the snapshot {snapshot}; pass a later "
            "snapshot or drop those transactions first")
    recency = ((snap_ns - last) // _NS_PER_DAY).astype(np.float64)

    n_inv = max(len(inv_uniques), 1)
    pairs = np.sort(c * n_inv + inv_codes[keep])
    first = np.ones(len(pairs), dtype=bool)
    first[1:] = pairs[1:] != pairs[:-1]
    frequency = np.bincount(pairs[first] // n_inv, minlength=n_customers).astype(np.float64)
    total = np.bincount(c, weights=amount[keep], minlength=n_customers)

    index = pd.Index(cust_uniques[present], name=columns.customer)
    features = pd.DataFrame({"recency": recency, "frequency": frequency,
                             "monetary": total / frequency}, index=index)
    return RFMResult(features=features, snapshot=snapshot,
                     dropped_missing_customer=dropped_missing,
                     dropped_cancelled=dropped_cancelled, n_transactions_used=n_used)


# --------------------------------------------------------------------------- scaler


# scikit-learn ships no type information: its base classes are Any to mypy.
class RFMScaler(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Optional ``log1p`` then standardisation per column; the owner's part of the model.

    ``transform`` gives ``(log1p(x) - mean_) / scale_`` (without ``log1p`` if ``log=False``);
    ``inverse_transform`` maps standardised points, such as cluster centres, back to business
    units. A zero-variance column gets ``scale_ = 1`` (as scikit-learn's ``StandardScaler``).
    With ``log=True`` every value must be ≥ 0. ``to_dict``/``from_dict`` give a JSON-able
    form for releasing the model.

    Parameters
    ----------
    log : bool, default=True
        Apply ``log1p`` before standardising (RFM features are heavy-tailed).

    Attributes
    ----------
    mean_ : ndarray of shape (n_features,)
    scale_ : ndarray of shape (n_features,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str, only when fitted on a DataFrame with string columns

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, 1.0, 10.0], [30.0, 5.0, 100.0], [300.0, 2.0, 1000.0]])
    >>> scaler = RFMScaler().fit(X)
    >>> Z = scaler.transform(X)
    >>> np.round(Z.mean(axis=0), 12) + 0.0, np.round(Z.std(axis=0), 12)
    (array([0., 0., 0.]), array([1., 1., 1.]))
    >>> np.allclose(scaler.inverse_transform(Z), X)
    True
    """

    _FORMAT = "cipherseg.RFMScaler"
    _VERSION = 1

    def __init__(self, log: bool = True) -> None:
        self.log = log

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = bool(self.log)
        return tags

    def _check_log_param(self) -> None:
        if not isinstance(self.log, bool | np.bool_):
            raise ParameterError(f"RFMScaler(log=...) must be True or False, got {self.log!r}")

    def _forward(self, X: np.ndarray) -> np.ndarray:
        if not self.log:
            return X
        if (X < 0).any():
            raise ValidationError("Negative values in data passed to RFMScaler(log=True): RFM "
                                  f"features are ≥ 0 (the smallest value is {X.min()}); use "
                                  "log=False for data that can be negative")
        logged: np.ndarray = np.log1p(X)
        return logged

    def fit(self, X: Any, y: Any = None) -> RFMScaler:
        """Learn the per-column mean and standard deviation (after ``log1p`` if ``log``)."""
        self._check_log_param()
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite=True)
        Xt = self._forward(X)
        self.mean_ = Xt.mean(axis=0)
        scale = Xt.std(axis=0)
        scale[(np.ptp(Xt, axis=0) == 0) | (scale == 0)] = 1.0
        self.scale_ = scale
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Standardised features (float64 array)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite=True, reset=False)
        result: np.ndarray = (self._forward(X) - self.mean_) / self.scale_
        return result

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Back to business units: ``expm1(Z * scale_ + mean_)`` (no ``expm1`` if not log)."""
        check_is_fitted(self)
        Z = check_array(X, dtype=np.float64, ensure_all_finite=True)
        if Z.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {Z.shape[1]} features, but RFMScaler is expecting "
                             f"{self.n_features_in_} features as input.")
        Xt = Z * self.scale_ + self.mean_
        result: np.ndarray = np.expm1(Xt) if self.log else Xt
        return result

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able parameters of a fitted scaler.

        >>> import json
        >>> s = RFMScaler().fit([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
        >>> back = RFMScaler.from_dict(json.loads(json.dumps(s.to_dict())))
        >>> bool((back.mean_ == s.mean_).all() and (back.scale_ == s.scale_).all())
        True
        """
        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        return {
            "format": self._FORMAT,
            "version": self._VERSION,
            "log": bool(self.log),
            "mean": [float(v) for v in self.mean_],
            "scale": [float(v) for v in self.scale_],
            "feature_names": None if names is None else [str(n) for n in names],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RFMScaler:
        """A fitted scaler from :meth:`to_dict` output; malformed input raises ValidationError.

        >>> RFMScaler.from_dict({"format": "cipherseg.RFMScaler", "version": 1, "log": False,
        ...                      "mean": [0.0], "scale": [2.0]}).transform([[4.0]])
        array([[2.]])
        """
        if not isinstance(data, Mapping) or data.get("format") != cls._FORMAT:
            raise ValidationError(f"not a serialised RFMScaler (expected format {cls._FORMAT!r})")
        if data.get("version") != cls._VERSION:
            raise ValidationError(f"RFMScaler version {data.get('version')!r} is not supported "
                                  f"(this cipherseg reads version {cls._VERSION})")
        log = data.get("log")
        if not isinstance(log, bool):
            raise ValidationError(f"RFMScaler 'log' must be true or false, got {log!r}")
        mean, scale = _float_list(data.get("mean"), "mean"), _float_list(data.get("scale"),
                                                                           "scale")
        if len(mean) != len(scale) or not mean:
            raise ValidationError(f"RFMScaler 'mean' ({len(mean)}) and 'scale' ({len(scale)}) "
                                  "must be non-empty and of equal length")
        if any(s <= 0 for s in scale):
            raise ValidationError("RFMScaler 'scale' values must be > 0")
        names = data.get("feature_names")
        scaler = cls(log=log)
        scaler.mean_ = np.asarray(mean, dtype=np.float64)
        scaler.scale_ = np.asarray(scale, dtype=np.float64)
        scaler.n_features_in_ = len(mean)
        if names is not None:
            if (not isinstance(names, Sequence) or isinstance(names, str)
                    or len(names) != len(mean) or not all(isinstance(n, str) for n in names)):
                raise ValidationError("RFMScaler 'feature_names' must be a list of "
                                      f"{len(mean)} strings or null")
            scaler.feature_names_in_ = np.asarray(names, dtype=object)
        return scaler


def _float_list(value: Any, name: str) -> list[float]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValidationError(f"RFMScaler {name!r} must be a list of numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValidationError(f"RFMScaler {name!r} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return out


# --------------------------------------------------------------------------- names

#: A centroid's feature is "high"/"low" when its log1p value is at least this far (≈ 28 %)
#: above/below the mean of all centroids' log1p values …
_LEVEL_THRESHOLD = 0.25
#: … and at least this many standard deviations (across centroids) away from that mean.
_LEVEL_Z = 0.5


def _name(r: int, f: int, m: int) -> str:
    recent, lapsed = r < 0, r > 0
    if recent and f > 0 and m > 0:
        return "champions"
    if recent and f > 0:
        return "loyal customers"
    if recent and f < 0:
        return "new customers"
    if lapsed and (f > 0 or m > 0):
        return "at risk"
    if lapsed and f < 0 and m < 0:
        return "lost"
    if lapsed:
        return "hibernating"
    if m > 0:
        return "big spenders"
    if f > 0:
        return "loyal customers"
    if recent:
        return "potential loyalists"
    if f < 0 or m < 0:
        return "occasional customers"
    return "regular customers"


def segment_names(centroids_business_units: pd.DataFrame,
                  categories: pd.DataFrame | None = None) -> list[str]:
    """Plain-language, unique names for segments from their R/F/M in business units.

    Each feature of each centroid gets a level relative to the other centroids: with
    ``d = log1p(value) - mean over centroids of log1p(value)`` and ``s`` the standard
    deviation of ``log1p(value)`` over centroids, the level is *high* if ``d ≥ 0.25`` and
    ``d ≥ 0.5 s``, *low* if ``d ≤ -0.25`` and ``d ≤ -0.5 s``, *middle* otherwise (0.25 in
    log1p units is a difference of about 28 %). Recency *low* reads as "recent", *high* as
    "lapsed". The first matching rule names the segment:

    ==========================================  ======================
    recency / frequency / monetary               name
    ==========================================  ======================
    recent, F high, M high                       champions
    recent, F high                               loyal customers
    recent, F low                                new customers
    lapsed, F or M high                          at risk
    lapsed, F low, M low                         lost
    lapsed                                       hibernating
    M high                                       big spenders
    F high                                       loyal customers
    recent                                       potential loyalists
    F or M low                                   occasional customers
    otherwise                                    regular customers
    ==========================================  ======================

    A row with any missing value (an empty segment) is named "empty segment" and left out of
    the comparison. Segments that would share a name are told apart by the feature on which
    they differ most (largest spread of ``log1p`` values among them): "occasional customers
    (lower spend)" and "occasional customers (higher spend)"; with three or more, "lowest",
    "middle" and "highest" (a number is appended only if two middles remain), so names are
    unique and say how the segments differ. With ``categories`` (each segment's share of
    spend per category), segments sharing a name that spend mostly (≥ 40 %) on different
    categories are named by them first: "lost (mostly beauty)".

    >>> segment_names(pd.DataFrame({"recency": [60.0, 60.0, 5.0, 8.0],
    ...                             "frequency": [1.0, 1.0, 20.0, 25.0],
    ...                             "monetary": [30.0, 100.0, 300.0, 350.0]}))
    ['lost', 'hibernating', 'champions (more recent)', 'champions (less recent)']

    >>> import pandas as pd
    >>> centroids = pd.DataFrame({"recency": [5.0, 200.0, 10.0, 40.0],
    ...                           "frequency": [20.0, 1.0, 1.0, 4.0],
    ...                           "monetary": [500.0, 40.0, 60.0, 90.0]})
    >>> segment_names(centroids)
    ['champions', 'lost', 'new customers', 'regular customers']
    """
    if not isinstance(centroids_business_units, pd.DataFrame):
        raise ValidationError("segment_names needs a DataFrame with columns "
                              f"{list(FEATURES)}, got {type(centroids_business_units).__name__}")
    missing = [c for c in FEATURES if c not in centroids_business_units.columns]
    if missing:
        raise ValidationError(f"segment_names: missing column(s) {missing}; found "
                              f"{list(centroids_business_units.columns)}")
    values = centroids_business_units.loc[:, list(FEATURES)].to_numpy(dtype=np.float64,
                                                                     na_value=np.nan)
    empty = np.isnan(values).any(axis=1)
    rest = values[~empty]
    if np.isinf(rest).any() or (rest < 0).any():
        raise ValidationError("segment_names: recency, frequency and monetary must be finite "
                              "and ≥ 0 (business units)")
    logs = np.log1p(rest)
    if len(logs):
        dev = logs - logs.mean(axis=0)
        bound = np.maximum(_LEVEL_THRESHOLD, _LEVEL_Z * logs.std(axis=0))
    else:
        dev = bound = logs
    levels = np.where(dev >= bound, 1, np.where(dev <= -bound, -1, 0))
    base: list[str] = []
    it = iter(levels)
    for is_empty in empty:
        if is_empty:
            base.append("empty segment")
        else:
            r, f, m = (int(v) for v in next(it))
            base.append(_name(r, f, m))
    if categories is not None and len(categories) == len(base):
        base = _by_category(base, categories)
    return _distinguish(base, np.where(empty[:, None], np.nan,
                                       np.log1p(np.where(np.isnan(values), 0.0,
                                                         np.abs(values)))))


#: A segment is "mostly" a category when at least this share of its spend goes there.
_MOSTLY = 0.4


def _by_category(base: list[str], categories: pd.DataFrame) -> list[str]:
    """Segments sharing a name whose spend goes mostly to different categories are told
    apart by them ("lost (mostly beauty)"), before falling back to recency, frequency or
    spend. ``categories``: one row per segment, one share column per category."""
    names = list(base)
    shares = categories.to_numpy(dtype=np.float64, na_value=0.0)
    labels = [str(c).removeprefix("share:") for c in categories.columns]
    for name in dict.fromkeys(base):
        rows = [i for i, b in enumerate(base) if b == name]
        if len(rows) < 2 or name == "empty segment" or not labels:
            continue
        top = [int(np.argmax(shares[i])) for i in rows]
        mostly = [shares[i, t] >= _MOSTLY for i, t in zip(rows, top, strict=True)]
        if all(mostly) and len(set(top)) == len(top):
            for i, t in zip(rows, top, strict=True):
                names[i] = f"{name} (mostly {labels[t]})"
    return names


#: Words for a segment's rank on a feature among segments that share a name: for two
#: segments (low, high), for three or more (lowest, middle, highest).
_RANK_WORDS = {
    "recency": (("more recent", "less recent"), ("most recent", "middle recency",
                                                 "least recent")),
    "frequency": (("less frequent", "more frequent"), ("least frequent", "middle frequency",
                                                       "most frequent")),
    "monetary": (("lower spend", "higher spend"), ("lowest spend", "middle spend",
                                                   "highest spend")),
}


def _distinguish(base: list[str], logs: np.ndarray) -> list[str]:
    names = list(base)
    for name in dict.fromkeys(base):
        rows = [i for i, b in enumerate(base) if b == name]
        if len(rows) < 2 or name == "empty segment":
            continue
        part = logs[rows]
        spread = np.nanmax(part, axis=0) - np.nanmin(part, axis=0)
        j = int(np.nanargmax(spread)) if np.isfinite(spread).any() else 2
        two, many = _RANK_WORDS[FEATURES[j]]
        order = sorted(range(len(rows)), key=lambda r: (part[r, j], r))
        for rank, r in enumerate(order):
            if len(rows) == 2:
                word = two[rank]
            else:
                word = many[0] if rank == 0 else many[2] if rank == len(rows) - 1 else many[1]
            names[rows[r]] = f"{name} ({word})"
    out: list[str] = []
    used: set[str] = set()
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name} {n}"
        used.add(candidate)
        out.append(candidate)
    return out
