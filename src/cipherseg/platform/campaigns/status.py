"""What a campaign's status means, in words the merchant and the operator read.

A status says what happened: ``completed`` (every message that was to go out went),
``completed with failures``, ``failed`` (nothing reached a phone), ``partly sent``
(cancelled after some went out), ``waiting`` (everything left is held by quiet hours:
"527 messages will go out at 08:00 Asia/Shanghai (in 6 h 55 min)"), ``scheduled``.

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 5, 4, 17, 5, tzinfo=UTC)            # 01:05 in Shanghai
>>> at = datetime(2026, 5, 5, 0, 0, tzinfo=UTC)              # 08:00 in Shanghai
>>> when(at, now, "Asia/Shanghai")
'08:00 Asia/Shanghai (in 6 h 55 min)'
>>> waiting_sentence(527, at, now, "Asia/Shanghai")
'527 messages will go out at 08:00 Asia/Shanghai (in 6 h 55 min)'
>>> when(datetime(2026, 5, 7, 1, 30, tzinfo=UTC), now, "Asia/Shanghai")
'Thu 7 May 09:30 Asia/Shanghai (in 2 days 8 h)'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from cipherseg.messaging.store import Campaign, CampaignReport

LABELS = {
    "draft": "draft", "pending_approval": "waiting for approval", "scheduled": "scheduled",
    "approved": "starting", "starting": "starting", "sending": "sending", "paused": "paused",
    "completed": "completed", "completed_with_failures": "completed with failures",
    "failed": "failed", "partly_sent": "partly sent", "cancelled": "cancelled",
    "test": "test message",
}


def duration(seconds: float) -> str:
    """A short duration: "6 h 55 min", "2 days 8 h", "40 s".

    >>> duration(24_900), duration(40), duration(3 * 86400 + 3600)
    ('6 h 55 min', '40 s', '3 days 1 h')
    """
    s = round(max(seconds, 0.0))
    if s < 60:
        return f"{s} s"
    minutes, hours, days = s // 60 % 60, s // 3600 % 24, s // 86400
    if days:
        return f"{days} day{'s' if days > 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min"


def when(at: datetime, now: datetime, timezone: str) -> str:
    """A moment in ``timezone``, with the date unless it is within a day, and how far off."""
    local = at.astimezone(ZoneInfo(timezone))
    ahead = (at - now).total_seconds()
    clock = local.strftime("%H:%M")
    if ahead > 20 * 3600 or ahead < 0:
        clock = f"{local:%a} {local.day} {local:%b} {clock}"
    rel = f"in {duration(ahead)}" if ahead > 0 else f"{duration(-ahead)} ago"
    return f"{clock} {timezone} ({rel})"


def waiting_sentence(count: int, at: datetime, now: datetime, timezone: str) -> str:
    """ "527 messages will go out at 08:00 Asia/Shanghai (in 6 h 55 min)"."""
    noun = "message" if count == 1 else "messages"
    if at <= now:
        return f"{count} {noun} {'is' if count == 1 else 'are'} due now"
    return f"{count} {noun} will go out at {when(at, now, timezone)}"


@dataclass(frozen=True)
class StatusView:
    """How a campaign's state is shown: a label, a CSS class, and sentences."""

    label: str
    css: str
    lines: tuple[str, ...]


def describe(camp: Campaign, report: CampaignReport,
             waiting: list[tuple[datetime, str, int]], now: datetime,
             timezone: str) -> StatusView:
    """The label and the sentences of the status panel (see the module docstring)."""
    total = report.total
    lines: list[str] = []
    status = camp.status
    label, css = LABELS.get(status, status.replace("_", " ")), status
    held = [(at, n) for at, reason, n in waiting if reason == "quiet hours"]
    retrying = sum(n for _at, reason, n in waiting if reason == "retry")
    if status == "scheduled" and camp.scheduled_at is not None:
        lines.append(f"Starts at {when(camp.scheduled_at, now, timezone)}.")
    elif status in ("approved", "starting"):
        lines.append("Queueing the audience; sending starts in a moment.")
    elif status == "sending":
        in_flight = total.queued + total.sending
        if held and not in_flight and not retrying:
            label, css = f"waiting until {when(held[0][0], now, timezone).split(' (')[0]}", \
                "waiting"
        if in_flight:
            lines.append(f"{in_flight} messages are being sent.")
        for at, n in held:
            lines.append(waiting_sentence(n, at, now, timezone)
                         + ", when quiet hours end in the customers' time zone.")
        if retrying:
            first = min(at for at, reason, _n in waiting if reason == "retry")
            lines.append(f"{retrying} will be tried again from {when(first, now, timezone)}.")
    if total.failed:
        lines.append(f"{total.failed} of {total.to_send} messages failed.")
    if status == "failed":
        lines.append("No message reached a phone. Once the cause below is fixed, the "
                     "operator can send the failed messages again.")
    elif status == "completed_with_failures":
        lines.append("The operator can send the failed messages again once the cause "
                     "below is fixed.")
    if status == "partly_sent":
        lines.append(f"Cancelled after {total.reached + total.failed} messages had gone to "
                     "the gateway; the others were not sent.")
    return StatusView(label, css, tuple(lines))
