"""The user's policies on real workers: quiet hours defer and then deliver, digests collapse
a window's events into one message, and the per-user rate limit paces sends."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifications.stack import ADMIN, Stack

pytestmark = pytest.mark.slow

INAPP = {"inapp": {"title": "{{ t }}", "text": "{{ t }}"}}


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    # Two per second per user and channel, no burst: the third send waits.
    s = stack_factory(NOTIFICATIONS_USER_RATE_PER_MINUTE="120", NOTIFICATIONS_USER_RATE_BURST="1")
    s.start_worker(concurrency=2)
    s.start_sweeper()
    s.template("ping", INAPP, {"t": "x"})
    return s


def local_hms(zone: str, offset: float) -> str:
    return (
        (datetime.now(UTC) + timedelta(seconds=offset))
        .astimezone(ZoneInfo(zone))
        .strftime("%H:%M:%S")
    )


def test_quiet_hours_defer_then_deliver_when_the_window_ends(stack: Stack) -> None:
    zone = "Pacific/Auckland"  # far from UTC: the window is read in the user's own zone
    user = stack.user(timezone=zone)
    ends = time.time() + 8
    stack.prefs(user, quiet_hours={"start": local_hms(zone, -60), "end": local_hms(zone, 8)})
    sent = stack.send(user_id=user, template="ping", data={"t": "hi"})
    done = stack.wait_done(sent["id"], timeout=30)
    (d,) = done["deliveries"]
    trail = [a["status"] for a in d["trail"]]
    assert trail[:2] == ["queued", "deferred"] and d["trail"][1]["error"] == "quiet hours"
    assert d["status"] == "delivered"
    # Held, not dropped, and delivered once the window ended (to the second).
    assert d["trail"][-1]["at"] >= ends - 1.0


def test_critical_skips_quiet_hours(stack: Stack) -> None:
    user = stack.user(timezone="Europe/Paris")
    stack.prefs(
        user,
        quiet_hours={
            "start": local_hms("Europe/Paris", -60),
            "end": local_hms("Europe/Paris", 3600),
        },
    )
    sent = stack.send(user_id=user, template="ping", data={"t": "now"}, priority="critical")
    (d,) = stack.wait_done(sent["id"])["deliveries"]
    assert [a["status"] for a in d["trail"]] == ["queued", "delivered"]


def test_a_digest_collapses_the_windows_events_into_one_message(stack: Stack) -> None:
    user = stack.user()
    stack.prefs(user, digest={"news": 2})
    sent = [
        stack.send(user_id=user, template="ping", data={"t": f"story {i}"}, category="news")
        for i in range(3)
    ]
    done = [stack.wait_done(n["id"], timeout=30)["deliveries"][0] for n in sent]
    assert all(d["status"] == "delivered" for d in done)
    assert all("digesting" in [a["status"] for a in d["trail"]] for d in done)
    with stack.http as c:
        items = c.get(f"/api/users/{user}/inbox").json()["items"]
    assert len(items) == 1
    assert items[0]["title"] == "3 new notifications"
    assert all(f"story {i}" in items[0]["body"] for i in range(3))
    # Another category is not held.
    other = stack.send(user_id=user, template="ping", data={"t": "alert"}, category="alerts")
    (alert,) = stack.wait_done(other["id"])["deliveries"]
    # (It may wait for this module's per-user rate limit; never for a digest.)
    assert alert["status"] == "delivered"
    assert "digesting" not in [a["status"] for a in alert["trail"]]


def test_the_per_user_rate_limit_defers_never_drops(stack: Stack) -> None:
    user = stack.user()
    sent = [stack.send(user_id=user, template="ping", data={"t": str(i)}) for i in range(4)]
    done = [stack.wait_done(n["id"], timeout=30)["deliveries"][0] for n in sent]
    assert all(d["status"] == "delivered" for d in done)
    limited = [d for d in done if any(a["error"] == "rate limited" for a in d["trail"])]
    assert limited, "4 sends at once over a 2/s limit with no burst: some must wait"
    finished = sorted(d["trail"][-1]["at"] for d in done)
    assert finished[-1] - finished[0] >= 1.0  # paced, 0.5 s apart at least on average
    with stack.http as c:
        assert c.get(f"/api/users/{user}/inbox/unread-count").json()["unread"] == 4
        c.post(f"/api/users/{user}/inbox/read-all", headers=ADMIN).raise_for_status()
        assert c.get(f"/api/users/{user}/inbox/unread-count").json()["unread"] == 0
