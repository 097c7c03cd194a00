"""Time decisions, pure functions: quiet hours in the user's own time zone (daylight saving
included), retry backoff with full jitter, and the Retry-After a provider asked for."""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def parse_hhmm(value: str) -> time:
    """ "22:00" or "22:00:30" (seconds: for tests and demos that cannot wait a minute)."""
    parts = [int(p) for p in value.split(":")]
    return time(parts[0], parts[1], parts[2] if len(parts) > 2 else 0)


def valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _wall(day: datetime, at: time, tz: ZoneInfo) -> datetime:
    """The instant a wall-clock time happens on `day` in `tz`. A time skipped by a
    spring-forward (02:30 that day) lands after the gap, as a clock set then would show it."""
    naive = datetime.combine(day.date(), at)
    return naive.replace(tzinfo=tz).astimezone(UTC)


def quiet_until(now: float, tz_name: str, start: str, end: str) -> float | None:
    """When quiet hours [start, end) in the user's zone end, if `now` falls in them, else None.
    A window may cross midnight (22:00-07:00)."""
    tz = ZoneInfo(tz_name)
    local = datetime.fromtimestamp(now, UTC).astimezone(tz)
    begin, finish = parse_hhmm(start), parse_hhmm(end)
    if begin == finish:
        return None
    instant = datetime.fromtimestamp(now, UTC)
    # Windows starting yesterday or today may contain now; check both.
    for offset in (-1, 0):
        day = local + timedelta(days=offset)
        opens = _wall(day, begin, tz)
        closes_day = day if finish > begin else day + timedelta(days=1)
        closes = _wall(closes_day, finish, tz)
        if opens <= instant < closes:
            return closes.timestamp()
    return None


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))] (AWS's recommendation),
    so retries of many failed sends spread out instead of arriving together."""
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(0, ceiling)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header's wait: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)
