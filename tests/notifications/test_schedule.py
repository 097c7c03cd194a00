"""Pure time decisions: quiet hours in the user's zone across daylight saving, backoff with
full jitter, Retry-After in both forms."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from notifications.schedule import backoff, quiet_until, retry_after_seconds


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_outside_quiet_hours_nothing_is_held() -> None:
    # 12:00 in Paris (UTC+1 in January) is outside 22:00-07:00.
    assert quiet_until(ts("2026-01-15T11:00:00"), "Europe/Paris", "22:00", "07:00") is None


def test_a_window_across_midnight_ends_next_morning_in_the_users_zone() -> None:
    # 23:30 Paris = 22:30 UTC; the window ends 07:00 Paris = 06:00 UTC the next day.
    until = quiet_until(ts("2026-01-15T22:30:00"), "Europe/Paris", "22:00", "07:00")
    assert until == ts("2026-01-16T06:00:00")
    # 05:00 Paris (started yesterday): same morning's 07:00.
    assert quiet_until(ts("2026-01-16T04:00:00"), "Europe/Paris", "22:00", "07:00") == ts(
        "2026-01-16T06:00:00"
    )


def test_the_end_follows_daylight_saving() -> None:
    # New York springs forward on 2026-03-08 (02:00 EST -> 03:00 EDT). The night before,
    # 07:00 is EDT (UTC-4): 11:00 UTC, not 12:00 as an offset taken at 23:00 EST would say.
    until = quiet_until(ts("2026-03-08T04:00:00"), "America/New_York", "22:00", "07:00")
    assert until == ts("2026-03-08T11:00:00")
    # And in autumn (2026-11-01, back to EST) 07:00 is 12:00 UTC.
    until = quiet_until(ts("2026-11-01T04:00:00"), "America/New_York", "22:00", "07:00")
    assert until == ts("2026-11-01T12:00:00")


def test_an_end_in_the_skipped_hour_lands_after_the_gap() -> None:
    # 02:30 does not exist on 2026-03-08 in New York: the window ends at 03:30 EDT (07:30 UTC).
    until = quiet_until(ts("2026-03-08T06:00:00"), "America/New_York", "01:00", "02:30")
    assert until == ts("2026-03-08T07:30:00")


def test_seconds_are_accepted() -> None:
    until = quiet_until(ts("2026-01-15T10:00:00"), "UTC", "09:59:59", "10:00:05")
    assert until == ts("2026-01-15T10:00:05")


def test_backoff_is_full_jitter_under_a_growing_capped_ceiling() -> None:
    rng = random.Random(7)
    draws = [backoff(3, base=1.0, cap=100.0, rng=rng) for _ in range(500)]
    assert all(0 <= d <= 4.0 for d in draws) and max(draws) > 3.5 and min(draws) < 0.5
    assert all(backoff(20, base=1.0, cap=10.0, rng=rng) <= 10.0 for _ in range(100))


def test_retry_after_seconds_and_dates() -> None:
    now = ts("2026-01-15T10:00:00")
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Thu, 15 Jan 2026 10:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None
