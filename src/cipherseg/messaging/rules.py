"""Delivery rules: consent, opt-out keywords, suppression, frequency caps and quiet hours.

The rules are checked when a campaign is queued (to count the audience) and again just
before every send, in this order; the first that applies decides:

1. no consent → skipped (``no consent``)
2. opted out (an inbound STOP/TD/退订 or an admin action) → skipped (``opted out``)
3. on the suppression list → skipped (``suppressed``)
4. frequency cap reached (messages sent to the same number in the period) → skipped
5. quiet hours in the customer's time zone (default 21:00–08:00) → *held* until they end

Everything here is pure (no database, no clock of its own): the caller passes the time, the
opt-out and suppression sets and the recent-send counts.

>>> from datetime import datetime, UTC
>>> policy = DeliveryPolicy()
>>> noon_shanghai = datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
>>> policy.decide(consent=True, timezone="Asia/Shanghai", now=noon_shanghai).action
'send'
>>> late = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)      # 22:00 in Shanghai
>>> d = policy.decide(consent=True, timezone="Asia/Shanghai", now=late)
>>> d.action, d.reason, d.hold_until.isoformat()
('hold', 'quiet hours', '2026-01-06T00:00:00+00:00')
>>> is_opt_out("  stop. "), is_opt_out("退订"), is_opt_out("Stop by the shop?")
(True, True, False)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cipherseg.errors import ParameterError

#: Inbound keywords that opt a number out. "TD"/"T" and 退订 are the Chinese conventions
#: ("回复TD退订"); the English ones are the usual carrier set.
OPT_OUT_KEYWORDS: frozenset[str] = frozenset({
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "TD", "T", "退订", "取消订阅",
})

#: Inbound keywords with which a customer who opted out asks for messages again. Only the
#: customer can lift their own opt-out; staff cannot.
OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "UNSTOP", "订阅"})

_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def normalise_keyword(text: str) -> str:
    """An inbound message folded for keyword matching: NFKC (full-width to ASCII), trimmed
    of whitespace and punctuation at both ends, upper-cased.

    >>> normalise_keyword("  ｓｔｏｐ! "), normalise_keyword("退订。")
    ('STOP', '退订')
    """
    return _EDGE.sub("", unicodedata.normalize("NFKC", text)).upper()


def matched_keyword(text: str, keywords: frozenset[str] = OPT_OUT_KEYWORDS) -> str | None:
    """The opt-out keyword an inbound message consists of, or ``None``.

    As carriers do, the keyword must be the whole message (so "Stop by our shop?" is not an
    opt-out); case, full-width forms and surrounding punctuation do not matter.

    >>> matched_keyword("Stop!"), matched_keyword(" 退订 "), matched_keyword("T-shirt?")
    ('STOP', '退订', None)
    """
    word = normalise_keyword(text)
    return word if word in keywords else None


def is_opt_out(text: str, keywords: frozenset[str] = OPT_OUT_KEYWORDS) -> bool:
    """Whether an inbound message is an opt-out keyword (see :func:`matched_keyword`).

    >>> is_opt_out("TD"), is_opt_out("td"), is_opt_out("hello")
    (True, True, False)
    """
    return matched_keyword(text, keywords) is not None


def zone(name: str | None, default: str) -> ZoneInfo:
    """The time zone ``name``, or ``default`` when it is missing or unknown.

    >>> zone(None, "Europe/London").key, zone("Mars/Olympus", "UTC").key
    ('Europe/London', 'UTC')
    """
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily window (local time) in which no message is sent; may wrap midnight.

    >>> q = QuietHours(time(21), time(8))
    >>> q.contains(time(22, 30)), q.contains(time(7, 59)), q.contains(time(8))
    (True, True, False)
    """

    start: time = time(21, 0)
    end: time = time(8, 0)

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ParameterError("quiet hours need different start and end times; to turn "
                                 "them off pass quiet_hours=None")

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time falls inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def release_time(self, now: datetime, tz: ZoneInfo) -> datetime:
        """When a message due at ``now`` may go out (``now`` itself outside the window).

        >>> q = QuietHours()
        >>> q.release_time(datetime(2026, 3, 1, 23, 0, tzinfo=UTC),
        ...                ZoneInfo("Europe/London")).isoformat()
        '2026-03-02T08:00:00+00:00'
        """
        local = now.astimezone(tz)
        if not self.contains(local.timetz().replace(tzinfo=None)):
            return now
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)
        release = datetime.combine(day, self.end, tzinfo=tz)
        return release.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``max_messages`` to the same number per rolling ``period``.

    >>> FrequencyCap(2, timedelta(days=7)).describe()
    'frequency cap (2 per 7 days)'
    """

    max_messages: int
    period: timedelta

    def __post_init__(self) -> None:
        if self.max_messages < 1 or self.period <= timedelta(0):
            raise ParameterError("a frequency cap needs max_messages >= 1 and a positive "
                                 "period")

    def describe(self) -> str:
        secs = self.period.total_seconds()
        if secs % 86400 == 0:
            span = f"{int(secs // 86400)} day{'s' if secs != 86400 else ''}"
        elif secs % 3600 == 0:
            span = f"{int(secs // 3600)} hour{'s' if secs != 3600 else ''}"
        else:
            span = f"{int(secs)} seconds"
        return f"frequency cap ({self.max_messages} per {span})"


Action = Literal["send", "skip", "hold"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one message now, and why."""

    action: Action
    reason: str = ""
    hold_until: datetime | None = None


SEND = Decision("send")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """The rules of a campaign (quiet hours ``None`` = none; cap ``None`` = no cap).

    >>> DeliveryPolicy(frequency_cap=FrequencyCap(1, timedelta(days=1))).decide(
    ...     consent=True, timezone=None, now=datetime(2026, 1, 1, 4, tzinfo=UTC),
    ...     recent_sends=1).reason
    'frequency cap (1 per 1 day)'
    """

    quiet_hours: QuietHours | None = field(default_factory=QuietHours)
    frequency_cap: FrequencyCap | None = field(
        default_factory=lambda: FrequencyCap(3, timedelta(days=7)))
    default_timezone: str = "Asia/Shanghai"

    def decide(self, *, consent: bool, timezone: str | None, now: datetime,
               opted_out: bool = False, suppressed: bool = False,
               recent_sends: int = 0, check_time: bool = True) -> Decision:
        """Apply the rules (module docstring) to one recipient at ``now`` (aware UTC).

        ``check_time=False`` leaves quiet hours out (used when counting an audience).
        """
        if now.tzinfo is None:
            raise ParameterError("DeliveryPolicy.decide needs an aware datetime (UTC)")
        if not consent:
            return Decision("skip", "no consent")
        if opted_out:
            return Decision("skip", "opted out")
        if suppressed:
            return Decision("skip", "suppressed")
        cap = self.frequency_cap
        if cap is not None and recent_sends >= cap.max_messages:
            return Decision("skip", cap.describe())
        if check_time and self.quiet_hours is not None:
            release = self.quiet_hours.release_time(now, zone(timezone, self.default_timezone))
            if release > now:
                return Decision("hold", "quiet hours", release)
        return SEND


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for per-message failures, and how many attempts a message gets.

    Attempts that never reached the gateway (it was down) do not count.

    >>> p = RetryPolicy(base_delay=timedelta(seconds=2), max_delay=timedelta(seconds=30))
    >>> [p.delay(n).total_seconds() for n in (1, 2, 3, 6)]
    [2.0, 4.0, 8.0, 30.0]
    """

    max_attempts: int = 5
    base_delay: timedelta = timedelta(seconds=5)
    max_delay: timedelta = timedelta(minutes=10)
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < timedelta(0) or self.factor < 1:
            raise ParameterError("RetryPolicy needs max_attempts >= 1, a non-negative "
                                 "base_delay and factor >= 1")

    def delay(self, attempts: int) -> timedelta:
        """Wait before the next try after ``attempts`` failed attempts (1-based)."""
        secs = self.base_delay.total_seconds() * self.factor ** max(attempts - 1, 0)
        return min(timedelta(seconds=secs), self.max_delay)

    def exhausted(self, attempts: int) -> bool:
        """Whether a message that failed ``attempts`` times gets no further try."""
        return attempts >= self.max_attempts
