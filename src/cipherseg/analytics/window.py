"""A time window of purchases, and the snapshot recency is measured from.

A window is a date range (``start``/``end``, either open), a number of days, or all history.
It is resolved against the latest purchase day on record: "the last N days" are the N days
ending on that day (the data's own recent past, not the calendar's: a mall that uploads
monthly still gets N days of purchases), an open end is that day, an open start is the first
purchase. **Recency is counted from the window's end**: the snapshot is midnight after the
window's last day (the convention of :func:`~cipherseg.analytics.rfm.compute_rfm`: the day
after the latest purchase), so a customer who bought on the last day has recency 1 and
nothing depends on the day the job runs.

>>> w = TimeWindow(days=30).resolve(latest=date(2025, 6, 30))
>>> w.start, w.end, w.snapshot
(datetime.date(2025, 6, 1), datetime.date(2025, 6, 30), Timestamp('2025-07-01 00:00:00'))
>>> TimeWindow(start=date(2025, 1, 1), end=date(2025, 3, 31)).label()
'2025-01-01 to 2025-03-31'
>>> TimeWindow().resolve(latest=date(2025, 6, 30)).label()
'all history until 2025-06-30'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd

from cipherseg.errors import ValidationError

__all__ = ["MAX_DAYS", "ResolvedWindow", "TimeWindow"]

#: The longest "last N days" window (ten years).
MAX_DAYS = 3650


@dataclass(frozen=True)
class ResolvedWindow:
    """Concrete first and last day (both included); ``start`` None means no lower bound."""

    start: date | None
    end: date

    @property
    def snapshot(self) -> pd.Timestamp:
        """Midnight after the last day: recency is counted from here."""
        return pd.Timestamp(self.end + timedelta(days=1))

    def label(self) -> str:
        if self.start is None:
            return f"all history until {self.end}"
        return f"{self.start} to {self.end}"

    def to_dict(self) -> dict[str, str | None]:
        return {"start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat()}

    def select(self, tx: pd.DataFrame, date_column: str) -> pd.DataFrame:
        """The rows of ``tx`` whose date falls in the window (days are whole days)."""
        day = pd.to_datetime(tx[date_column]).dt.normalize()
        keep = day <= pd.Timestamp(self.end)
        if self.start is not None:
            keep &= day >= pd.Timestamp(self.start)
        return tx.loc[keep.to_numpy()]


@dataclass(frozen=True)
class TimeWindow:
    """What was asked: a range (either end open), the last ``days`` days, or all history."""

    start: date | None = None
    end: date | None = None
    days: int | None = None

    def __post_init__(self) -> None:
        if self.days is not None and (self.start is not None or self.end is not None):
            raise ValidationError("give either a date range or a number of days, not both")
        if self.days is not None and not 1 <= self.days <= MAX_DAYS:
            raise ValidationError(f"the number of days must be between 1 and {MAX_DAYS}")
        if self.start and self.end and self.start > self.end:
            raise ValidationError("the window's start date is after its end date")

    @property
    def is_all(self) -> bool:
        return self.start is None and self.end is None and self.days is None

    def label(self) -> str:
        """The window in words, as asked."""
        if self.days is not None:
            return f"last {self.days} days"
        if self.start and self.end:
            return f"{self.start} to {self.end}"
        if self.start:
            return f"from {self.start}"
        if self.end:
            return f"until {self.end}"
        return "all history"

    def resolve(self, latest: date) -> ResolvedWindow:
        """Concrete days given the latest purchase day on record (of every participant)."""
        if self.days is not None:
            return ResolvedWindow(latest - timedelta(days=self.days - 1), latest)
        end = self.end if self.end is not None else latest
        if self.start is not None and self.start > end:
            raise ValidationError(f"the window starts on {self.start}, after the latest "
                                  f"purchase on record ({end}); choose an earlier start")
        return ResolvedWindow(self.start, end)

    def to_dict(self) -> dict[str, Any]:
        """JSON form kept in a job's parameters."""
        return {"from": self.start.isoformat() if self.start else None,
                "to": self.end.isoformat() if self.end else None, "days": self.days}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TimeWindow:
        """The window of :meth:`to_dict` (``None`` or ``{}``: all history).

        >>> TimeWindow.from_dict({"from": "2025-01-01", "to": None, "days": None}).label()
        'from 2025-01-01'
        """
        if not data:
            return cls()
        try:
            start = date.fromisoformat(data["from"]) if data.get("from") else None
            end = date.fromisoformat(data["to"]) if data.get("to") else None
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"the time window's dates are not ISO dates: {exc}") from None
        days = data.get("days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int)):
            raise ValidationError("the time window's number of days must be a whole number")
        return cls(start, end, days)
