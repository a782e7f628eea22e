"""A deterministic synthetic shopping mall: transaction lines and customer records.

:func:`generate_mall_transactions` draws customers of four latent types and their purchases
over a period, fully vectorised (about a second per 100,000 customers). The types differ in
purchase rate, basket size and price level, and in *when* they buy:

==========  =====  ====================  =====  =====  ===================================
type        share  invoices / year       lines  price  active
==========  =====  ====================  =====  =====  ===================================
champions   10 %   30 (gamma, shape 6)   2.5    ¥ 200  the period (15 % join later)
regulars    30 %   10 (gamma, shape 6)   2      ¥ 65   the period (15 % join later)
occasional  35 %   1 (gamma, shape 2)    1.5    ¥ 30   join any time, to the end
lapsed      25 %   6 (gamma, shape 4)    2      ¥ 60   from the start, stop 5–50 % into it
==========  =====  ====================  =====  =====  ===================================

Each customer makes ``1 + Poisson(rate × active years × Gamma)`` invoices (negative-binomial
counts), at uniform times in its active window, in opening hours (10:00–22:00). An invoice has
``1 + Poisson(lines - 1)`` lines; a line's unit price is the customer's price level (lognormal
around the type's) times a lognormal factor, its quantity geometric, so spend is heavy-tailed.
About 16 lines per customer (100,000 customers ≈ 1.6 million lines). On standardised log RFM,
k-means with k=4 recovers the types with ARI ≈ 0.6 and silhouette ≈ 0.35.

Realistic dirt, as in the Online Retail data set: about 1 % of invoices are guest checkouts
without a customer id, and about 1.5 % of lines are later cancelled, each by an invoice
``"C…"`` holding the line with a negative quantity. Rows are in time order; invoice numbers
increase with time.

:func:`generate_customers` gives the same customers' records (phone, consent, first name) for
the platform and messaging. Phone numbers are random numbers in Chinese mobile ranges, not real
people's. Both functions return the same frame, bit for bit, for the same arguments.

>>> tx = generate_mall_transactions(50, seed=1)
>>> list(tx.columns)
['customer_id', 'invoice_id', 'timestamp', 'quantity', 'unit_price', 'amount']
>>> tx["customer_id"].dropna().str.match(r"^C\\d{6}$").all()
np.True_
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from cipherseg.errors import ParameterError

__all__ = [
    "CUSTOMER_TYPES",
    "CustomerType",
    "customer_ids",
    "generate_customers",
    "generate_mall_transactions",
    "latent_customer_types",
]


@dataclass(frozen=True, slots=True)
class CustomerType:
    """One latent behaviour of the synthetic mall's customers."""

    name: str
    share: float
    invoices_per_year: float
    rate_shape: float
    extra_lines: float
    price_level: float


CUSTOMER_TYPES: tuple[CustomerType, ...] = (
    CustomerType("champions", 0.10, 30.0, 6.0, 1.5, 200.0),
    CustomerType("regulars", 0.30, 10.0, 6.0, 1.0, 65.0),
    CustomerType("occasional", 0.35, 1.0, 2.0, 0.5, 30.0),
    CustomerType("lapsed", 0.25, 6.0, 4.0, 1.0, 60.0),
)
_OCCASIONAL, _LAPSED = 2, 3

GUEST_INVOICE_SHARE = 0.01
CANCELLED_LINE_SHARE = 0.015
_OPEN_SECONDS = 10 * 3600
_OPEN_HOURS_SECONDS = 12 * 3600
_CANCEL_MAX_DELAY_DAYS = 10

# Mobile number blocks of the three Chinese carriers (all valid for libphonenumber's CN
# metadata).
PHONE_PREFIXES = ("130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
                  "150", "151", "152", "153", "155", "156", "157", "158", "159", "166",
                  "180", "181", "182", "183", "184", "185", "186", "187", "188", "189",
                  "198", "199")
FIRST_NAMES = ("Wei", "Fang", "Na", "Min", "Jing", "Li", "Qiang", "Lei", "Jun", "Yang",
               "Yong", "Yan", "Jie", "Juan", "Tao", "Ming", "Chao", "Xiuying", "Xia", "Ping",
               "Gang", "Hui", "Hong", "Xin", "Ying", "Hao", "Yu", "Lin", "Bo", "Dan",
               "Ling", "Mei", "Jian", "Hua", "Yun", "Qing", "Peng", "Rui", "Xue", "Zhen")

_TX_STREAM = 0x4D414C4C  # "MALL"
_CUSTOMER_STREAM = 0x43555354  # "CUST"


def _rng(seed: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _check_n(n_customers: int) -> int:
    if (isinstance(n_customers, bool) or not isinstance(n_customers, int | np.integer)
            or n_customers < 1):
        raise ParameterError(f"n_customers must be a positive integer, got {n_customers!r}")
    return int(n_customers)


def _id_width(n_customers: int) -> int:
    return max(6, len(str(n_customers)))


def _digits(numbers: np.ndarray, width: int, out: np.ndarray) -> None:
    """Write ``numbers`` (non-negative int64) as zero-padded ASCII into ``out[:, -width:]``."""
    value = numbers.copy()
    for j in range(out.shape[1] - 1, out.shape[1] - 1 - width, -1):
        out[:, j] = (value % 10 + 48).astype(np.uint8)
        value //= 10


def _string_column(chars: np.ndarray, keep: np.ndarray | None = None) -> pd.Series:
    """A pandas string column from a (rows, width) ASCII matrix, without per-row Python.

    ``keep`` marks the characters that belong to each row (for varying lengths).
    """
    n, width = chars.shape
    if keep is None:
        data = chars.reshape(-1)
        offsets = np.arange(0, n * width + 1, width, dtype=np.int64)
    else:
        data = chars.reshape(-1)[keep.reshape(-1)]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=offsets[1:])
    large = offsets[-1] >= 2**31
    kind = pa.large_string() if large else pa.string()
    offsets = offsets if large else offsets.astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))]
    array = pa.Array.from_buffers(kind, n, buffers, null_count=0)
    return pd.Series(pd.array(array, dtype=pd.StringDtype("pyarrow", na_value=np.nan)))


def _ascii_ids(numbers: np.ndarray, width: int, *, prefix: bool) -> np.ndarray:
    """Rows of ASCII ``"C"`` + zero-padded ``numbers`` (or without the ``"C"``)."""
    chars = np.empty((len(numbers), width + int(prefix)), dtype=np.uint8)
    if prefix:
        chars[:, 0] = ord("C")
    _digits(numbers, width, chars)
    return chars


def customer_ids(n_customers: int) -> pd.Series:
    """The customer ids ``C000001`` … used by both generators (wider beyond 999,999).

    >>> customer_ids(3).tolist()
    ['C000001', 'C000002', 'C000003']
    """
    n = _check_n(n_customers)
    chars = _ascii_ids(np.arange(1, n + 1, dtype=np.int64), _id_width(n), prefix=True)
    return _string_column(chars).rename("customer_id")


def _draw_types(rng: np.random.Generator, n: int) -> np.ndarray:
    shares = np.array([t.share for t in CUSTOMER_TYPES])
    return rng.choice(len(CUSTOMER_TYPES), size=n, p=shares / shares.sum()).astype(np.int8)


def latent_customer_types(n_customers: int, seed: int = 0) -> pd.Series:
    """The latent type each customer of ``generate_mall_transactions(n, seed)`` was drawn from.

    For evaluating segmentations against the truth; the owner would not know these.

    >>> latent_customer_types(4, seed=0).tolist()
    ['regulars', 'lapsed', 'regulars', 'champions']
    """
    n = _check_n(n_customers)
    types = _draw_types(_rng(seed, _TX_STREAM), n)
    names = pd.Categorical.from_codes(types, categories=[t.name for t in CUSTOMER_TYPES])
    return pd.Series(names, index=pd.Index(customer_ids(n), name="customer_id"),
                     name="customer_type")


def generate_mall_transactions(n_customers: int, seed: int = 0, start: str = "2025-01-01",
                               days: int = 365) -> pd.DataFrame:
    """Transaction lines of a synthetic mall's customers over ``days`` days from ``start``.

    Columns: ``customer_id`` (``C000001`` …, missing for guest checkouts), ``invoice_id``
    (digits, or ``"C"`` + digits for a cancellation), ``timestamp`` (datetime64[s]),
    ``quantity`` (int16, negative on cancellations), ``unit_price`` and ``amount``
    (= quantity × unit price, float64 of whole cents). The two id columns are pandas
    categoricals of text (each id stored once, rows hold 4-byte codes). About 16 lines per
    customer.

    Vectorised numpy throughout; memory about 40 bytes per line (1,000,000 customers ≈ 16
    million lines ≈ 0.7 GB). The same arguments give the same frame bit for bit.

    >>> tx = generate_mall_transactions(200, seed=3)
    >>> tx.equals(generate_mall_transactions(200, seed=3))
    True
    >>> bool(tx["timestamp"].is_monotonic_increasing)
    True
    >>> bool((tx.loc[tx["invoice_id"].str.startswith("C"), "quantity"] < 0).all())
    True
    """
    n = _check_n(n_customers)
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ParameterError(f"days must be a positive integer, got {days!r}")
    try:
        origin = pd.Timestamp(start)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"start {start!r} is not a date") from exc
    if origin is pd.NaT or origin.tz is not None:
        raise ParameterError(f"start must be a naive date such as '2025-01-01', got {start!r}")
    origin_s = (origin.normalize() - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    rng = _rng(seed, _TX_STREAM)
    period = float(days)

    # --- customers: type, active window [begin, end) in days, rate, price level
    ctype = _draw_types(rng, n)
    types = CUSTOMER_TYPES
    rate = np.array([t.invoices_per_year for t in types])[ctype]
    shape = np.array([t.rate_shape for t in types])[ctype]
    extra_lines = np.array([t.extra_lines for t in types])[ctype]
    price_level = (np.array([t.price_level for t in types])[ctype]
                   * rng.lognormal(0.0, 0.45, size=n))
    u_begin, u_late, u_end = rng.random(n), rng.random(n), rng.random(n)
    lapsed = ctype == _LAPSED
    end = np.where(lapsed, period * (0.05 + 0.45 * u_end), period)
    late_joiner = u_late < 0.15
    begin = np.where(late_joiner, 0.7 * period * u_begin, 0.0)
    begin = np.where(lapsed, np.where(late_joiner, 0.5 * end * u_begin, 0.0), begin)
    begin = np.where(ctype == _OCCASIONAL, period * u_begin, begin)
    span = end - begin
    heterogeneity = rng.gamma(shape, 1.0 / shape)
    n_inv = 1 + rng.poisson(rate * span / 365.0 * heterogeneity)

    # --- invoices: customers' and guests', in time order
    n_cust_inv = int(n_inv.sum())
    n_guest = int(rng.binomial(n_cust_inv, GUEST_INVOICE_SHARE))
    owner = np.concatenate([np.repeat(np.arange(n, dtype=np.int32), n_inv),
                            np.full(n_guest, -1, dtype=np.int32)])
    n_invoices = len(owner)
    known = owner >= 0
    safe_owner = np.maximum(owner, 0)
    inv_day = np.where(known, begin[safe_owner] + rng.random(n_invoices) * span[safe_owner],
                       rng.random(n_invoices) * period)
    inv_day = np.minimum(np.floor(inv_day), period - 1).astype(np.int64)
    inv_time = (inv_day * 86_400 + _OPEN_SECONDS
                + rng.integers(0, _OPEN_HOURS_SECONDS, size=n_invoices))
    del inv_day
    order = np.argsort(inv_time)
    owner, inv_time = owner[order], inv_time[order]
    del order
    known, safe_owner = owner >= 0, np.maximum(owner, 0)
    inv_lines = 1 + rng.poisson(np.where(known, extra_lines[safe_owner], 1.0)).astype(np.int32)
    inv_level = np.where(known, price_level[safe_owner], 50.0)
    del safe_owner

    # --- lines, contiguous per invoice: unit price in cents, quantity
    n_lines = int(inv_lines.sum())
    cents = np.rint(np.repeat(inv_level, inv_lines) * rng.lognormal(0.0, 0.6, size=n_lines)
                    * 100.0)
    cents = np.maximum(cents, 50.0).astype(np.int32)
    quantity = np.minimum(rng.geometric(0.55, size=n_lines), 99).astype(np.int16)

    # --- cancellations: "C" invoices of one line each, negative quantity, 1–10 days later in
    # opening hours; those that would fall after the period are not in the data.
    can_src = np.flatnonzero((rng.random(n_lines) < CANCELLED_LINE_SHARE)
                             & np.repeat(known, inv_lines))
    inv_first_line = np.cumsum(inv_lines, dtype=np.int64) - inv_lines
    can_inv = np.searchsorted(inv_first_line, can_src, side="right") - 1
    can_day = (inv_time[can_inv] // 86_400
               + rng.integers(1, _CANCEL_MAX_DELAY_DAYS + 1, size=len(can_src)))
    can_time = (can_day * 86_400 + _OPEN_SECONDS
                + rng.integers(0, _OPEN_HOURS_SECONDS, size=len(can_src)))
    can_quantity = -(1 + np.floor(rng.random(len(can_src)) * quantity[can_src])).astype(np.int16)
    inside = np.flatnonzero(can_day < days)
    inside = inside[np.argsort(can_time[inside], kind="stable")]
    can_src, can_inv, can_time, can_quantity = (can_src[inside], can_inv[inside],
                                                can_time[inside], can_quantity[inside])
    n_cancel = len(can_src)

    # --- events = invoices and cancellations merged in time order (cancellations after ties)
    n_events = n_invoices + n_cancel
    is_cancel = np.zeros(n_events, dtype=bool)
    is_cancel[np.searchsorted(inv_time, can_time, side="right") + np.arange(n_cancel)] = True
    is_invoice = ~is_cancel
    ev_lines = np.ones(n_events, dtype=np.int32)
    ev_lines[is_invoice] = inv_lines
    ev_owner = np.empty(n_events, dtype=np.int32)
    ev_owner[is_invoice] = owner
    ev_owner[is_cancel] = owner[can_inv]
    ev_time = np.empty(n_events, dtype=np.int64)
    ev_time[is_invoice] = inv_time
    ev_time[is_cancel] = can_time
    del owner, inv_time, inv_lines, known

    # --- rows: each event's lines in order; a cancellation is one row at its event's start
    n_rows = n_lines + n_cancel
    cancel_rows = (np.cumsum(ev_lines, dtype=np.int64) - ev_lines)[is_cancel]
    normal_rows = np.ones(n_rows, dtype=bool)
    normal_rows[cancel_rows] = False
    row_quantity = np.empty(n_rows, dtype=np.int16)
    row_quantity[normal_rows] = quantity
    row_quantity[cancel_rows] = can_quantity
    row_cents = np.empty(n_rows, dtype=np.int32)
    row_cents[normal_rows] = cents
    row_cents[cancel_rows] = cents[can_src]
    del quantity, cents, normal_rows
    # Invoice categories are sorted (all plain numbers, then all "C" numbers; same width, so
    # text order is number order), which lets pandas check their uniqueness in one pass.
    code_type = np.int32 if n_events < 2**31 else np.int64
    ev_code = np.empty(n_events, dtype=code_type)
    ev_code[is_invoice] = np.arange(n_invoices, dtype=code_type)
    ev_code[is_cancel] = np.arange(n_invoices, n_events, dtype=code_type)
    row_invoice = np.repeat(ev_code, ev_lines)
    timestamp = np.repeat((origin_s + ev_time).astype("datetime64[s]"), ev_lines)
    row_owner = np.repeat(ev_owner, ev_lines)

    # --- ids as text: each customer and invoice formatted once, rows hold category codes
    customer = pd.Categorical.from_codes(row_owner, dtype=pd.CategoricalDtype(
        pd.Index(customer_ids(n)), ordered=False), validate=False)
    inv_width = max(6, len(str(n_events)))  # numbers 10**inv_width + event, in time order
    numbers = 10**inv_width + np.arange(n_events, dtype=np.int64)
    chars = _ascii_ids(np.concatenate([numbers[is_invoice], numbers[is_cancel]]),
                       inv_width + 1, prefix=True)
    keep = np.ones(chars.shape, dtype=bool)
    keep[:n_invoices, 0] = False
    invoice = pd.Categorical.from_codes(row_invoice, dtype=pd.CategoricalDtype(
        pd.Index(_string_column(chars, keep=keep)), ordered=False), validate=False)
    del chars, keep, numbers

    return pd.DataFrame({
        "customer_id": customer,
        "invoice_id": invoice,
        "timestamp": timestamp,
        "quantity": row_quantity,
        "unit_price": row_cents / 100.0,
        "amount": row_quantity.astype(np.int64) * row_cents / 100.0,
    }, copy=False)


def generate_customers(n_customers: int, seed: int = 0) -> pd.DataFrame:
    """Customer records matching :func:`generate_mall_transactions`'s customer ids.

    Columns: ``customer_id``, ``phone`` (11-digit Chinese mobile numbers, distinct, random —
    not real people's), ``consent`` (bool, about 90 % True) and ``first_name`` (pinyin).

    >>> people = generate_customers(3, seed=0)
    >>> list(people.columns), people["phone"].str.len().tolist()
    (['customer_id', 'phone', 'consent', 'first_name'], [11, 11, 11])
    >>> people.equals(generate_customers(3, seed=0))
    True
    """
    n = _check_n(n_customers)
    rng = _rng(seed, _CUSTOMER_STREAM)
    space = len(PHONE_PREFIXES) * 10**8
    if n > space:
        raise ParameterError(f"at most {space:,} distinct phone numbers can be generated")
    number = rng.choice(space, size=n, replace=False).astype(np.int64)
    prefix = np.frombuffer("".join(PHONE_PREFIXES).encode("ascii"),
                           dtype=np.uint8).reshape(-1, 3)
    chars = np.empty((n, 11), dtype=np.uint8)
    chars[:, :3] = prefix[number // 10**8]
    _digits(number % 10**8, 8, chars)
    consent = rng.random(n) < 0.9
    names = pa.array(FIRST_NAMES, type=pa.string()).take(
        pa.array(rng.integers(0, len(FIRST_NAMES), size=n)))
    return pd.DataFrame({
        "customer_id": customer_ids(n),
        "phone": _string_column(chars),
        "consent": consent,
        "first_name": pd.Series(pd.array(names, dtype=pd.StringDtype("pyarrow",
                                                                     na_value=np.nan))),
    })
