"""The user's policies on real workers: quiet hours defer and then deliver, digests collapse
a window's events into one message, the per-user rate limit paces sends, and the per-channel
one is shared by every worker process."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from notifications.dispatch import queue_for
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


CHANNEL_RATE = 4  # per second; the GCRA bucket (burst) is the rate too


@pytest.fixture(scope="module")
def limited(stack_factory: Callable[..., Stack]) -> Stack:
    """Two in-app worker pools of two processes each under one per-channel limit."""
    s = stack_factory(NOTIFICATIONS_CHANNEL_RATE_PER_SECOND=str(CHANNEL_RATE))
    for _ in range(2):
        s.start_worker(queues=[queue_for("inapp")], concurrency=2)
    s.start_sweeper()
    s.template("ping", INAPP, {"t": "x"})
    return s


def test_the_channel_rate_limit_is_shared_by_every_worker_process(limited: Stack) -> None:
    n, burst = 24, CHANNEL_RATE
    users = [limited.user() for _ in range(n)]  # one each: no per-user limit applies
    started = time.time()
    with ThreadPoolExecutor(8) as pool:
        sent = list(
            pool.map(lambda u: limited.send(user_id=u, template="ping", data={"t": u}), users)
        )
    done = [limited.wait_done(n["id"], timeout=60)["deliveries"][0] for n in sent]
    assert all(d["status"] == "delivered" for d in done)
    assert any(a["error"] == "rate limited" for d in done for a in d["trail"])
    # One limit for all four processes: after the burst, one send per 1/rate s, so the k-th
    # delivery (k > burst) cannot happen before (k - burst) / rate s after the first submit,
    # however the processes are scheduled (a stall only delays). Four private limits would
    # let all 24 go within (24 / 4 - burst) / rate = 0.5 s.
    finished = sorted(d["trail"][-1]["at"] for d in done)
    for k, at in enumerate(finished, start=1):
        assert at - started >= (k - burst) / CHANNEL_RATE - 0.05, (k, at - started)
    assert finished[-1] - started >= (n - burst) / CHANNEL_RATE - 0.05  # 5 s
