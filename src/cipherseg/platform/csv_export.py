"""The one CSV writer of every export (audit log, labels, upload error reports, campaign
reports and lift detail).

Spreadsheets run a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return as a formula (``=HYPERLINK(...)`` typed as a user name at the login form would reach
the administrator's spreadsheet through the audit export). Every text cell that starts with
one of them is written with a leading apostrophe, which spreadsheets show as text; numbers
are written as numbers (``-5`` stays a number).

>>> safe_cell("=HYPERLINK(\\"http://x\\")"), safe_cell("-5"), safe_cell(-5), safe_cell(None)
('\\'=HYPERLINK("http://x")', "'-5", -5, '')
>>> csv_text([["name", "n"], ["@SUM(A1)", 3]])
"name,n\\r\\n'@SUM(A1),3\\r\\n"
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import StreamingResponse

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBERS = (int, float, Decimal)

Cell = Any


def safe_cell(value: Cell) -> Cell:
    """``value`` as it may go into an exported cell (text neutralised, numbers kept)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, _NUMBERS):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _writer(buf: io.StringIO) -> Any:
    # RFC 4180 line ends: with "\n" alone, a value holding a bare "\r" is left unquoted and
    # a spreadsheet starts a new row there.
    return csv.writer(buf, lineterminator="\r\n")


def csv_text(rows: Iterable[Sequence[Cell]]) -> str:
    """All ``rows`` (header first) as CSV text, every cell through :func:`safe_cell`."""
    return "".join(iter_csv(rows))


def iter_csv(rows: Iterable[Sequence[Cell]], *, chunk_rows: int = 2000) -> Iterator[str]:
    """``rows`` as CSV text chunks of ``chunk_rows`` lines (for streaming responses)."""
    buf = io.StringIO()
    writer = _writer(buf)
    n = 0
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
        n += 1
        if n >= chunk_rows:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            n = 0
    if n or buf.tell():
        yield buf.getvalue()


def csv_response(rows: Iterable[Sequence[Cell]], filename: str) -> StreamingResponse:
    """A download of ``rows`` as ``filename`` (streamed; cells neutralised)."""
    return StreamingResponse(iter_csv(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{filename}"'})
