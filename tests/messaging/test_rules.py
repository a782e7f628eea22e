"""Delivery rules: keywords, quiet hours across time zones and DST, caps, retry policy."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cipherseg.errors import ParameterError
from cipherseg.messaging.rules import (
    DeliveryPolicy,
    FrequencyCap,
    QuietHours,
    RetryPolicy,
    is_opt_out,
    matched_keyword,
)


@pytest.mark.parametrize("text, keyword", [
    ("STOP", "STOP"), ("stop", "STOP"), (" Stop. ", "STOP"), ("ＳＴＯＰ", "STOP"),
    ("TD", "TD"), ("td", "TD"), ("T", "T"), ("退订", "退订"), ("退订。", "退订"),
    ("unsubscribe", "UNSUBSCRIBE"), ("取消订阅", "取消订阅"),
    ("Stop by our shop?", None), ("T-shirt", None), ("hello", None), ("", None),
    ("请退订", None), ("STOP STOP", None),
])
def test_opt_out_keywords(text: str, keyword: str | None) -> None:
    assert matched_keyword(text) == keyword
    assert is_opt_out(text) == (keyword is not None)


def test_quiet_hours_wrapping_midnight() -> None:
    q = QuietHours(time(21), time(8))
    assert [q.contains(time(h)) for h in (20, 21, 23, 0, 7, 8, 12)] == \
        [False, True, True, True, True, False, False]
    day = QuietHours(time(12), time(14))
    assert day.contains(time(13)) and not day.contains(time(14))
    with pytest.raises(ParameterError):
        QuietHours(time(8), time(8))


def test_release_is_in_the_customers_time_zone() -> None:
    q = QuietHours()
    now = datetime(2026, 5, 4, 14, 30, tzinfo=UTC)   # 22:30 Shanghai, 15:30 London
    assert q.release_time(now, ZoneInfo("Asia/Shanghai")) == datetime(2026, 5, 5, 0, 0,
                                                                        tzinfo=UTC)
    assert q.release_time(now, ZoneInfo("Europe/London")) == now
    early = datetime(2026, 5, 4, 20, 0, tzinfo=UTC)   # 04:00 Shanghai, same day
    assert q.release_time(early, ZoneInfo("Asia/Shanghai")) == datetime(2026, 5, 5, 0, 0,
                                                                          tzinfo=UTC)


def test_release_across_a_dst_change() -> None:
    q = QuietHours()
    # Night of 28→29 March 2026: London moves to BST; 08:00 local is 07:00 UTC.
    now = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert q.release_time(now, ZoneInfo("Europe/London")) == datetime(2026, 3, 29, 7, 0,
                                                                        tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                    timezones=st.just(UTC)),
       st.sampled_from(["Asia/Shanghai", "Europe/London", "America/New_York",
                        "Australia/Lord_Howe", "Asia/Kathmandu"]))
def test_release_time_is_never_quiet_and_never_early(now: datetime, tz: str) -> None:
    q = QuietHours()
    z = ZoneInfo(tz)
    release = q.release_time(now, z)
    assert release >= now
    assert release - now <= timedelta(hours=13)
    assert not q.contains(release.astimezone(z).time())


def test_policy_order_and_reasons() -> None:
    p = DeliveryPolicy(frequency_cap=FrequencyCap(2, timedelta(days=7)))
    now = datetime(2026, 5, 4, 4, tzinfo=UTC)
    kw = {"timezone": "Asia/Shanghai", "now": now}
    assert p.decide(consent=False, opted_out=True, **kw).reason == "no consent"
    assert p.decide(consent=True, opted_out=True, suppressed=True, **kw).reason == "opted out"
    assert p.decide(consent=True, suppressed=True, **kw).reason == "suppressed"
    assert p.decide(consent=True, recent_sends=2, **kw).reason == \
        "frequency cap (2 per 7 days)"
    assert p.decide(consent=True, recent_sends=1, **kw).action == "send"
    night = datetime(2026, 5, 4, 15, tzinfo=UTC)
    assert p.decide(consent=True, timezone=None, now=night).action == "hold"
    assert p.decide(consent=True, timezone=None, now=night, check_time=False).action == "send"
    assert DeliveryPolicy(quiet_hours=None).decide(consent=True, timezone=None,
                                                   now=night).action == "send"
    with pytest.raises(ParameterError, match="aware"):
        p.decide(consent=True, timezone=None, now=datetime(2026, 1, 1))


def test_unknown_time_zone_falls_back_to_default() -> None:
    p = DeliveryPolicy(default_timezone="Europe/London")
    night_london = datetime(2026, 1, 5, 23, tzinfo=UTC)
    assert p.decide(consent=True, timezone="Not/AZone", now=night_london).action == "hold"


def test_retry_policy_backoff_and_limits() -> None:
    r = RetryPolicy(max_attempts=3, base_delay=timedelta(seconds=1),
                    max_delay=timedelta(seconds=3))
    assert [r.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert not r.exhausted(2) and r.exhausted(3)
    with pytest.raises(ParameterError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ParameterError):
        FrequencyCap(0, timedelta(days=1))
