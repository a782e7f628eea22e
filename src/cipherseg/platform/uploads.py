"""Upload templates, row-by-row validation and all-or-nothing, idempotent import.

Two kinds of file, as CSV (UTF-8, ``,`` or ``;``) or XLSX (first sheet):

* **customers**: ``customer_id, phone, consent`` and optionally ``first_name, timezone``;
* **transactions**: ``transaction_id, customer_id, date, amount`` and optionally ``category``
  (customers must have been uploaded first).

Validation streams the file once and counts every problem, keeping the first
:data:`KEEP_PER_COLUMN` of each column for the report (row numbers as a spreadsheet shows them:
the header is row 1). If any row is bad nothing is imported. Otherwise the validated rows
(spilled to a private file) are imported in one database transaction. Re-importing the same rows
changes nothing (a keyed digest of each row is stored); a customer row with new values updates
that customer; a transaction id that comes back with different values is an error.
Phone numbers are validated with ``phonenumbers`` (national numbers read in the configured
default region), stored only encrypted, and never echoed: the error report shows a masked
value.

>>> [c.name for c in COLUMNS["customers"]]
['customer_id', 'phone', 'consent', 'first_name', 'timezone']
>>> template_csv("transactions").splitlines()[0]
b'transaction_id,customer_id,date,amount,category'
"""

from __future__ import annotations

import csv
import functools
import io
import pickle
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cipherseg.clock import utcnow
from cipherseg.errors import ValidationError
from cipherseg.pii.masking import mask_phone, mask_raw, normalise_phone
from cipherseg.pii.vault import PiiVault
from cipherseg.platform import csv_export, purchases
from cipherseg.platform.models import Customer, Transaction
from cipherseg.platform.sealed_files import SealedWriter, open_sealed, read_sealed

KINDS = ("customers", "transactions")
FORMATS = ("csv", "xlsx")
BATCH = 2000
_ID_RE = re.compile(r"^[A-Za-z0-9_.:/#-]{1,64}$")
_TRUE = frozenset({"yes", "y", "true", "t", "1", "是", "同意"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "否", "不同意"})
MAX_AMOUNT = Decimal("10000000000")
EARLIEST_DATE = date(1970, 1, 1)


@dataclass(frozen=True)
class Column:
    """One template column: name, whether required, what it holds, an example."""

    name: str
    required: bool
    description: str
    examples: tuple[str, str]


COLUMNS: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column("customer_id", True, "your id for the customer (letters, digits, _.:/#-; "
               "at most 64)", ("C0001", "C0002")),
        Column("phone", True, "mobile number; national numbers are read in the platform's "
               "default region, others need +country code", ("13812345678", "+447911123123")),
        Column("consent", True, "marketing consent: yes/no (also true/false, 1/0)",
               ("yes", "no")),
        Column("first_name", False, "optional, used in message templates", ("Li", "")),
        Column("timezone", False, "optional IANA time zone (quiet hours)",
               ("Asia/Shanghai", "Europe/London")),
    ),
    "transactions": (
        Column("transaction_id", True, "unique id of the purchase (at most 64 characters)",
               ("T000001", "T000002")),
        Column("customer_id", True, "a customer_id from your customers upload",
               ("C0001", "C0002")),
        Column("date", True, "purchase date, YYYY-MM-DD, not in the future",
               ("2024-03-01", "2024-03-15")),
        Column("amount", True, "amount paid, positive, at most 2 decimals",
               ("199.00", "35.50")),
        Column("category", False, "optional product category", ("apparel", "food")),
    ),
}


class UploadFileError(ValidationError):
    """The file as a whole cannot be read (format, encoding, header)."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem in one row; ``value`` is already masked or shortened for display."""

    row: int
    column: str
    value: str
    message: str


#: Problems kept per column for the report (the rest are counted): a file of 400,000 bad
#: rows keeps memory and the stored report bounded.
KEEP_PER_COLUMN = 100


@dataclass
class ValidationSummary:
    """What validation found: every problem counted, the first :data:`KEEP_PER_COLUMN` of
    each column kept (``errors``, with their rows in ``bad_rows``)."""

    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    bad_rows: set[int] = field(default_factory=set)
    #: Problems per column (``""``: the row as a whole).
    counts: dict[str, int] = field(default_factory=dict)
    n_problems: int = 0
    n_bad_rows: int = 0
    keep_per_column: int = KEEP_PER_COLUMN
    _batch_rows: set[int] = field(default_factory=set)

    def add(self, err: RowError) -> None:
        self.n_problems += 1
        seen = self.counts.get(err.column, 0)
        self.counts[err.column] = seen + 1
        if seen < self.keep_per_column:
            self.errors.append(err)
            self.bad_rows.add(err.row)
        self._batch_rows.add(err.row)

    def end_batch(self) -> None:
        """Count the bad rows of the batch just checked (a row's problems all come within
        its batch)."""
        self.n_bad_rows += len(self._batch_rows)
        self._batch_rows.clear()

    @property
    def has_errors(self) -> bool:
        return self.n_problems > 0


@dataclass
class ImportCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


RowProgress = Callable[[int], None]
"""``progress(rows)``: rows of the upload handled so far (not a protocol stage: see
:data:`cipherseg.progress.Progress`)."""


# ---------------------------------------------------------------------------- templates
def template_csv(kind: str) -> bytes:
    """The CSV template of ``kind``: header and two example rows."""
    cols = COLUMNS[kind]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.name for c in cols])
    for i in range(2):
        w.writerow([c.examples[i] for c in cols])
    return buf.getvalue().encode("utf-8")


def template_xlsx(kind: str) -> bytes:
    """The XLSX template of ``kind``: a data sheet and an instructions sheet.

    >>> template_xlsx("customers")[:2]
    b'PK'
    """
    from openpyxl import Workbook
    from openpyxl.styles import Font

    cols = COLUMNS[kind]
    wb = Workbook()
    ws = wb.active
    ws.title = kind
    ws.append([c.name for c in cols])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for i in range(2):
        ws.append([c.examples[i] for c in cols])
    for idx, c in enumerate(cols):
        ws.column_dimensions[chr(ord("A") + idx)].width = max(14, len(c.name) + 4)
        if c.name in ("phone", "customer_id", "transaction_id", "date", "amount"):
            for row in ws.iter_rows(min_row=2, min_col=idx + 1, max_col=idx + 1):
                for cell in row:
                    cell.number_format = "@"  # keep as text: no lost leading zeros
    info = wb.create_sheet("instructions")
    info.append(["column", "required", "meaning"])
    for c in cols:
        info.append([c.name, "yes" if c.required else "no", c.description])
    info.append([])
    info.append(["Fill the first sheet; keep the header row. Any bad row rejects the whole "
                 "file and the error report lists every problem."])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class SealedUpload:
    """A pending upload as stored: sealed at rest (:mod:`cipherseg.platform.sealed_files`)
    under the owner's data key. CSV is decrypted as a stream; a workbook (a zip needs random
    access) is decrypted into memory, refused beyond ``max_bytes`` (the upload limit)."""

    path: Path
    vault: PiiVault
    owner_id: int
    max_bytes: int = 200 << 20


#: What the readers take: a pending upload, or a plain file (templates, tests, tools).
Source = Path | SealedUpload


def _open(src: Source) -> BinaryIO:
    if isinstance(src, SealedUpload):
        return open_sealed(src.path, src.vault, src.owner_id)
    return src.open("rb")


def _workbook(src: Source) -> Path | BinaryIO | None:
    """The workbook to open if ``src`` is an .xlsx (zip) file, else None (CSV)."""
    with _open(src) as fh:
        if not fh.read(4).startswith(b"PK\x03\x04"):
            return None
    if isinstance(src, Path):
        return src if zipfile.is_zipfile(src) else None
    book = io.BytesIO(read_sealed(src.path, src.vault, src.owner_id, limit=src.max_bytes))
    return book if zipfile.is_zipfile(book) else None


@dataclass(frozen=True)
class SpreadsheetLimits:
    """Bounds checked on an .xlsx file's zip directory before anything is decompressed
    (Python's zipfile stops at each member's declared size and fails its CRC beyond it, so
    the declared sizes bound what parsing can produce)."""

    #: All members together, uncompressed.
    max_uncompressed: int = 1024 << 20
    #: A member larger than 1 MB may expand at most this many times its compressed size.
    max_ratio: float = 200.0
    #: The shared-strings part, uncompressed: openpyxl keeps every shared string in memory
    #: (measured: 16 MB of 11-digit strings, 620,000 of them, take 90 MB; 64 MB take 361 MB).
    max_shared_strings: int = 16 << 20
    max_members: int = 1000


_RATIO_FLOOR = 1 << 20


def check_xlsx(path: Path | BinaryIO, limits: SpreadsheetLimits) -> None:
    """Refuse a workbook whose zip directory exceeds ``limits`` (UploadFileError).

    >>> import tempfile
    >>> bomb = Path(tempfile.mkdtemp()) / "bomb.xlsx"
    >>> with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
    ...     z.writestr("xl/sharedStrings.xml", b"<sst>" + b"<si><t>A</t></si>" * 200_000)
    >>> check_xlsx(bomb, SpreadsheetLimits())
    Traceback (most recent call last):
    ...
    cipherseg.platform.uploads.UploadFileError: the workbook part xl/sharedStrings.xml expands ...
    """
    def mb(n: int) -> str:
        return f"{n / (1 << 20):.0f} MB"

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadFileError("the file is not a readable .xlsx workbook; save it again "
                              "from Excel or upload CSV") from exc
    if len(members) > limits.max_members:
        raise UploadFileError(f"the workbook has {len(members)} parts (at most "
                              f"{limits.max_members}); save it again from Excel or upload CSV")
    total = 0
    for info in members:
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_FLOOR and ratio > limits.max_ratio:
            raise UploadFileError(
                f"the workbook part {info.filename[:80]} expands {ratio:.0f} times "
                f"(to {mb(info.file_size)}; at most {limits.max_ratio:.0f} times is accepted): "
                "refused as a possible zip bomb; upload the data as CSV")
        if info.filename.lower().endswith("sharedstrings.xml") and \
                info.file_size > limits.max_shared_strings:
            raise UploadFileError(
                f"the workbook's shared strings take {mb(info.file_size)} (at most "
                f"{mb(limits.max_shared_strings)}); upload the data as CSV instead")
    if total > limits.max_uncompressed:
        raise UploadFileError(f"the workbook expands to {mb(total)} (at most "
                              f"{mb(limits.max_uncompressed)}); upload the data as CSV "
                              "instead")


def detect_format(src: Source) -> str:
    """``"xlsx"`` for a zip container, else ``"csv"``."""
    return "csv" if _workbook(src) is None else "xlsx"


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() \
            else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value).strip()


def _read_header(cells: list[str], kind: str) -> list[str]:
    header = [c.strip().lower() for c in cells]
    names = [c.name for c in COLUMNS[kind]]
    required = [c.name for c in COLUMNS[kind] if c.required]
    missing = [n for n in required if n not in header]
    if missing:
        other = "customers" if kind == "transactions" else "transactions"
        hint = ""
        if all(n in header for n in (c.name for c in COLUMNS[other] if c.required)):
            hint = f" (this looks like a {other} file)"
        raise UploadFileError(f"the header misses column(s) {', '.join(missing)}{hint}; "
                              f"download the {kind} template and keep its first row")
    unknown = [h for h in header if h and h not in names]
    if unknown:
        raise UploadFileError(f"unknown column(s) {', '.join(unknown)}; the {kind} template "
                              f"has {', '.join(names)}")
    dupes = sorted({h for h in header if h and header.count(h) > 1})
    if dupes:
        raise UploadFileError(f"column(s) {', '.join(dupes)} appear twice in the header")
    return header


def iter_rows(src: Source, kind: str, limits: SpreadsheetLimits | None = None
              ) -> Iterator[tuple[int, dict[str, str] | RowError]]:
    """Yield ``(row number, {column: text})`` for each non-blank data row.

    A row with more cells than the header yields a :class:`RowError` instead.
    Whole-file problems raise :class:`UploadFileError`; a workbook is checked against
    ``limits`` before it is opened.
    """
    book = _workbook(src)
    if book is not None:
        check_xlsx(book, limits or SpreadsheetLimits())
        yield from _iter_xlsx(book, kind)
    else:
        yield from _iter_csv(src, kind)


#: The longest line of a CSV upload, in characters: a file without line breaks is refused
#: when this much has been read instead of being read whole into memory.
MAX_LINE_CHARS = 1 << 20


def _bounded_lines(text: io.TextIOWrapper, first_row: int) -> Iterator[str]:
    row = first_row
    while line := text.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise UploadFileError(f"line {row} of the file is longer than "
                                  f"{MAX_LINE_CHARS // 1024} kB (are the line breaks "
                                  "missing?); save the file again as CSV")
        row += 1
        yield line


def _iter_csv(src: Source, kind: str) -> Iterator[tuple[int, dict[str, str] | RowError]]:
    with _open(src) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        try:
            first = next(_bounded_lines(text, 1), "")
            if not first.strip():
                raise UploadFileError("the file is empty; download the template and fill it")
            delim = ";" if first.count(";") > first.count(",") else ","
            header = _read_header(next(csv.reader([first], delimiter=delim)), kind)
            reader = csv.reader(_bounded_lines(text, 2), delimiter=delim)
            rownum = 1
            for cells in reader:
                rownum += 1
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                    yield rownum, RowError(rownum, "", "", f"row has {len(cells)} cells but "
                                           f"the header has {len(header)} columns")
                    continue
                yield rownum, {h: (cells[i].strip() if i < len(cells) else "")
                               for i, h in enumerate(header) if h}
        except UnicodeDecodeError as exc:
            raise UploadFileError("the file is not UTF-8 text; in Excel use 'Save as CSV "
                                  "UTF-8', or upload the .xlsx file") from exc
        except csv.Error as exc:
            raise UploadFileError(f"the CSV is malformed ({exc}); check quotes") from exc


def _iter_xlsx(path: Path | BinaryIO, kind: str) -> Iterator[tuple[int, dict[str, str] | RowError]]:
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for broken files
        raise UploadFileError("the file is not a readable .xlsx workbook; save it again "
                              "from Excel or upload CSV") from exc
    try:
        ws = wb[kind] if kind in wb.sheetnames else wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        try:
            first = next(rows)
        except StopIteration:
            raise UploadFileError("the workbook's first sheet is empty; download the template "
                                  "and fill it") from None
        header = _read_header([_cell_text(v) for v in first], kind)
        width = len(header)
        for rownum, values in enumerate(rows, start=2):
            cells = [_cell_text(v) for v in values]
            if not any(cells):
                continue
            if len(cells) > width and any(cells[width:]):
                yield rownum, RowError(rownum, "", "", f"row has values beyond the "
                                       f"{width} header columns")
                continue
            yield rownum, {h: (cells[i] if i < len(cells) else "")
                           for i, h in enumerate(header) if h}
    finally:
        wb.close()


_DIMENSION = re.compile(rb'<(?:\w+:)?dimension ref="[A-Z]+\d+(?::[A-Z]+(\d+))?"')


def count_rows(src: Source, kind: str) -> int:
    """Number of data rows (for progress), without validating them. A workbook is not
    parsed for this (the import reads it once): its first sheet's declared dimension is
    used, 0 if it has none."""
    book = _workbook(src)
    if book is not None:
        try:
            with zipfile.ZipFile(book) as zf:
                sheets = sorted(n for n in zf.namelist()
                                if n.startswith("xl/worksheets/sheet") and n.endswith(".xml"))
                if not sheets:
                    return 0
                with zf.open(sheets[0]) as fh:
                    head = fh.read(64 * 1024)
        except (zipfile.BadZipFile, OSError, KeyError):
            return 0
        m = _DIMENSION.search(head)
        return max(0, int(m.group(1)) - 1) if m and m.group(1) else 0
    with _open(src) as fh:
        return max(0, sum(1 for _ in fh) - 1)


# ---------------------------------------------------------------------------- validating
def _shorten(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


@functools.lru_cache(maxsize=512)
def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_id(row: int, column: str, value: str, out: list[RowError]) -> None:
    if not value:
        out.append(RowError(row, column, "", "required value is empty"))
    elif not _ID_RE.match(value):
        out.append(RowError(row, column, _shorten(value), "ids are 1-64 characters: letters, "
                            "digits and _ . : / # -"))


@dataclass(frozen=True, slots=True)
class CleanCustomer:
    external_id: str
    phone_e164: str
    consent: bool
    first_name: str | None
    timezone: str | None


@dataclass(frozen=True, slots=True)
class CleanTransaction:
    external_id: str
    customer_external_id: str
    date: date
    amount: Decimal
    category: str | None


def validate_customer(row: int, cells: dict[str, str], region: str
                      ) -> tuple[CleanCustomer | None, list[RowError]]:
    """Check one customers row; returns the clean row or the errors."""
    errs: list[RowError] = []
    cid = cells.get("customer_id", "")
    _check_id(row, "customer_id", cid, errs)
    phone_raw = cells.get("phone", "")
    phone = ""
    if not phone_raw:
        errs.append(RowError(row, "phone", "", "required value is empty"))
    else:
        try:
            phone = normalise_phone(phone_raw, region=region)
        except ValidationError as exc:
            errs.append(RowError(row, "phone", mask_raw(phone_raw), str(exc)))
    consent_raw = cells.get("consent", "").strip().lower()
    consent = False
    if consent_raw in _TRUE:
        consent = True
    elif consent_raw not in _FALSE:
        errs.append(RowError(row, "consent", _shorten(consent_raw), "write yes or no"))
    first = cells.get("first_name", "").strip()
    if len(first) > 64:
        errs.append(RowError(row, "first_name", _shorten(first), "at most 64 characters"))
    tz = cells.get("timezone", "").strip()
    if tz and not _valid_zone(tz):
        errs.append(RowError(row, "timezone", _shorten(tz),
                             "unknown time zone; use an IANA name like Asia/Shanghai"))
    if errs:
        return None, errs
    return CleanCustomer(cid, phone, consent, first or None, tz or None), []


def _parse_date(text: str) -> date | None:
    text = text.strip()
    if "T" in text:
        text = text.split("T", 1)[0]
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def validate_transaction(row: int, cells: dict[str, str], today: date
                         ) -> tuple[CleanTransaction | None, list[RowError]]:
    """Check one transactions row (the customer lookup is done by the caller)."""
    errs: list[RowError] = []
    tid = cells.get("transaction_id", "")
    _check_id(row, "transaction_id", tid, errs)
    cid = cells.get("customer_id", "")
    _check_id(row, "customer_id", cid, errs)
    d_raw = cells.get("date", "")
    d = _parse_date(d_raw) if d_raw else None
    if not d_raw:
        errs.append(RowError(row, "date", "", "required value is empty"))
    elif d is None:
        errs.append(RowError(row, "date", _shorten(d_raw), "not a date; write YYYY-MM-DD"))
    elif d > today:
        errs.append(RowError(row, "date", d.isoformat(), "date is in the future"))
    elif d < EARLIEST_DATE:
        errs.append(RowError(row, "date", d.isoformat(), f"date is before {EARLIEST_DATE}"))
    a_raw = cells.get("amount", "")
    amount = Decimal(0)
    if not a_raw:
        errs.append(RowError(row, "amount", "", "required value is empty"))
    else:
        try:
            amount = Decimal(a_raw)
            if not amount.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            errs.append(RowError(row, "amount", _shorten(a_raw),
                                 "not a number; write digits with a decimal point, e.g. 35.50"))
        else:
            if amount <= 0:
                errs.append(RowError(row, "amount", _shorten(a_raw),
                                     "amount must be positive (refunds are not imported)"))
            elif amount >= MAX_AMOUNT:
                errs.append(RowError(row, "amount", _shorten(a_raw), "amount is too large"))
            elif amount != amount.quantize(Decimal("0.01")):
                errs.append(RowError(row, "amount", _shorten(a_raw),
                                     "at most 2 decimal places"))
    cat = cells.get("category", "").strip()
    if len(cat) > 64:
        errs.append(RowError(row, "category", _shorten(cat), "at most 64 characters"))
    if errs or d is None:
        return None, errs
    return CleanTransaction(tid, cid, d, amount.quantize(Decimal("0.01")), cat or None), []


def customer_digest(vault: PiiVault, c: CleanCustomer) -> str:
    return vault.pseudonym("customer-row", "\x1f".join(
        [c.external_id, c.phone_e164, "1" if c.consent else "0", c.first_name or "",
         c.timezone or ""]))


def transaction_digest(vault: PiiVault, t: CleanTransaction) -> str:
    return vault.pseudonym("transaction-row", "\x1f".join(
        [t.external_id, t.customer_external_id, t.date.isoformat(), str(t.amount),
         t.category or ""]))


def customer_pseudonym(vault: PiiVault, owner_id: int, external_id: str) -> str:
    """The stable pseudonym of a customer (joins, labels, campaigns)."""
    return vault.pseudonym("customer", f"{owner_id}/{external_id}")


def _chunks(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


class Importer:
    """Validates and imports one file for one owner.

    ``validate`` only reads the database; ``apply`` writes everything in the caller's
    transaction (the caller commits or rolls back).
    """

    def __init__(self, session: Session, vault: PiiVault, owner_id: int, kind: str,
                 path: Source, *, region: str, today: date | None = None,
                 limits: SpreadsheetLimits | None = None) -> None:
        if kind not in KINDS:
            raise ValidationError(f"unknown upload kind {kind!r}; use customers or "
                                  "transactions")
        self.session, self.vault, self.owner_id, self.kind = session, vault, owner_id, kind
        self.path, self.region = path, region
        self.limits = limits or SpreadsheetLimits()
        self.today = today or (datetime.now(UTC) + timedelta(days=1)).date()
        self._spill: Path | None = None

    def close(self) -> None:
        """Delete the spill file of validated rows."""
        if self._spill is not None:
            self._spill.unlink(missing_ok=True)
            self._spill = None

    def __enter__(self) -> Importer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pass 1 ------------------------------------------------------------------------
    def validate(self, progress: RowProgress | None = None) -> ValidationSummary:
        """Stream the file and collect every problem; raises UploadFileError for the file.

        Clean rows are spilled (pickled, next to the upload, mode 0600, sealed under the
        owner's data key like the upload itself) so that :meth:`apply` need not parse and
        validate them again.
        """
        self.close()
        summary = ValidationSummary()
        seen: set[str] = set()
        known = self._known_customers() if self.kind == "transactions" else set()
        stored = self.path.path if isinstance(self.path, SealedUpload) else self.path
        spill_path = stored.with_name(stored.name + ".validated")
        spill_path.unlink(missing_ok=True)
        self._spill = spill_path
        with SealedWriter(spill_path, self.vault, self.owner_id) as spill:
            self._validate_into(spill, summary, seen, known, progress)
        if summary.rows == 0:
            raise UploadFileError("the file has a header but no data rows")
        if summary.has_errors:
            self.close()
        return summary

    def _validate_into(self, spill: SealedWriter, summary: ValidationSummary, seen: set[str],
                       known: set[str], progress: RowProgress | None) -> None:
        for batch in _chunks(iter_rows(self.path, self.kind, self.limits), BATCH):
            clean_rows: list[CleanCustomer | CleanTransaction] = []
            clean_batch: list[tuple[int, CleanTransaction]] = []
            for rownum, cells in batch:
                summary.rows += 1
                if isinstance(cells, RowError):
                    summary.add(cells)
                    continue
                if self.kind == "customers":
                    clean_c, errs = validate_customer(rownum, cells, self.region)
                    key = clean_c.external_id if clean_c else None
                    clean: CleanCustomer | CleanTransaction | None = clean_c
                else:
                    clean_t, errs = validate_transaction(rownum, cells, self.today)
                    key = clean_t.external_id if clean_t else None
                    clean = clean_t
                    if clean_t and clean_t.customer_external_id not in known:
                        errs.append(RowError(rownum, "customer_id",
                                             _shorten(clean_t.customer_external_id),
                                             "unknown customer id; upload the customer first"))
                    elif clean_t:
                        clean_batch.append((rownum, clean_t))
                if key is not None and not errs:
                    if key in seen:
                        errs.append(RowError(rownum, COLUMNS[self.kind][0].name, key,
                                             "duplicate id in this file"))
                    seen.add(key)
                for e in errs:
                    summary.add(e)
                if clean is not None and not errs and not summary.has_errors:
                    clean_rows.append(clean)
            if clean_batch:
                self._check_existing_transactions(clean_batch, summary)
            summary.end_batch()
            if not summary.has_errors:
                pickle.dump(clean_rows, spill, protocol=pickle.HIGHEST_PROTOCOL)
            if progress:
                progress(summary.rows)

    def _known_customers(self) -> set[str]:
        return set(self.session.scalars(
            select(Customer.external_id).where(Customer.owner_id == self.owner_id)))

    def _existing(self, model: type[Customer] | type[Transaction], ids: list[str]
                  ) -> dict[str, tuple[int, str]]:
        rows = self.session.execute(
            select(model.external_id, model.id, model.row_digest).where(
                model.owner_id == self.owner_id, model.external_id.in_(ids)))
        return {ext: (pk, digest) for ext, pk, digest in rows}

    def _check_existing_transactions(self, batch: list[tuple[int, CleanTransaction]],
                                     summary: ValidationSummary) -> None:
        existing = self._existing(Transaction, [t.external_id for _, t in batch])
        for rownum, t in batch:
            found = existing.get(t.external_id)
            if found and found[1] != transaction_digest(self.vault, t):
                summary.add(RowError(rownum, "transaction_id", t.external_id,
                                     "this transaction was imported before with different "
                                     "values; transactions cannot be changed by re-upload"))

    # -- pass 2 ------------------------------------------------------------------------
    def _validated_batches(self) -> Iterator[list[Any]]:
        if self._spill is None or not self._spill.exists():
            raise ValidationError("validate the file (without errors) before importing it")
        with open_sealed(self._spill, self.vault, self.owner_id) as fh:
            while True:
                try:
                    yield pickle.load(fh)
                except EOFError:
                    return

    def apply(self, progress: RowProgress | None = None) -> ImportCounts:
        """Import the validated rows; raises ValidationError if the database changed."""
        counts = ImportCounts()
        done = 0
        for batch in self._validated_batches():
            if self.kind == "customers":
                self._apply_customers(batch, counts)
            else:
                self._apply_transactions(batch, counts)
            done += len(batch)
            if progress:
                progress(done)
        self.close()
        return counts

    def _apply_customers(self, clean: list[CleanCustomer], counts: ImportCounts) -> None:
        existing = self._existing(Customer, [c.external_id for c in clean])
        now = utcnow()
        inserts, updates = [], []
        for c in clean:
            digest = customer_digest(self.vault, c)
            found = existing.get(c.external_id)
            if found and found[1] == digest:
                counts.unchanged += 1
                continue
            pseudo = customer_pseudonym(self.vault, self.owner_id, c.external_id)
            values: dict[str, Any] = {
                "phone_ct": self.vault.encrypt("phone", c.phone_e164, context=pseudo),
                "phone_hmac": self.vault.pseudonym("phone", c.phone_e164),
                "phone_masked": mask_phone(c.phone_e164, region=self.region),
                "first_name_ct": (self.vault.encrypt("first_name", c.first_name,
                                                     context=pseudo)
                                  if c.first_name else None),
                "timezone": c.timezone, "consent": c.consent, "row_digest": digest,
                "updated_at": now,
            }
            if found:
                updates.append({"id": found[0], **values})
                counts.updated += 1
            else:
                inserts.append({"owner_id": self.owner_id, "external_id": c.external_id,
                                "pseudonym": pseudo, "created_at": now, **values})
                counts.inserted += 1
        if inserts:
            self.session.execute(insert(Customer), inserts)
        if updates:
            self.session.execute(update(Customer), updates)

    def _apply_transactions(self, clean: list[CleanTransaction],
                            counts: ImportCounts) -> None:
        existing = self._existing(Transaction, [t.external_id for t in clean])
        cust_ids = dict(self.session.execute(
            select(Customer.external_id, Customer.id).where(
                Customer.owner_id == self.owner_id,
                Customer.external_id.in_({t.customer_external_id for t in clean}))).all())
        inserts = []
        for t in clean:
            digest = transaction_digest(self.vault, t)
            found = existing.get(t.external_id)
            if found:
                if found[1] != digest:
                    raise ValidationError(f"transaction {t.external_id} changed during import;"
                                          " upload again")
                counts.unchanged += 1
                continue
            cust = cust_ids.get(t.customer_external_id)
            if cust is None:
                raise ValidationError(f"customer {t.customer_external_id} was erased during "
                                      "import; upload again")
            inserts.append({"owner_id": self.owner_id, "customer_id": cust,
                            "external_id": t.external_id, "row_digest": digest,
                            "payload_ct": purchases.seal(self.vault, self.owner_id,
                                                         t.external_id, t.date, t.amount,
                                                         t.category)})
            counts.inserted += 1
        if inserts:
            self.session.execute(insert(Transaction), inserts)


# ---------------------------------------------------------------------------- reports
def error_report_rows(errors: Iterable[RowError], counts: dict[str, int] | None = None,
                      keep_per_column: int = KEEP_PER_COLUMN) -> Iterator[list[Any]]:
    """The error report's lines: a header, one line per kept problem, then per column the
    number of problems not listed."""
    yield ["row", "column", "value", "problem"]
    for e in errors:
        yield [e.row, e.column, e.value, e.message]
    for column, n in sorted((counts or {}).items()):
        if n > keep_per_column:
            yield ["", column, "", f"... and {n - keep_per_column} more problems in this "
                                   f"column (the report lists the first {keep_per_column})"]


def error_report_csv(errors: Iterable[RowError], counts: dict[str, int] | None = None) -> bytes:
    """The downloadable error report (cells neutralised)."""
    return csv_export.csv_text(error_report_rows(errors, counts)).encode("utf-8")
