"""The one clock for timestamps cipherseg stores: aware UTC.

>>> utcnow().tzinfo
datetime.timezone.utc
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (stored timestamps are never naive)."""
    return datetime.now(UTC)


__all__ = ["utcnow"]
