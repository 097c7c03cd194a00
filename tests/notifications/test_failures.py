"""Delivery guarantees on real workers: retries that honour Retry-After, permanent errors
not retried, dead letters and replay, circuit breakers in Redis with SMS failover, a worker
killed mid-send, a Redis restart, and one failing channel never slowing a healthy one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.redis_server import RedisProcess
from notifications.dispatch import queue_for
from notifications.stack import ADMIN, Stack
from tests.notifications.conftest import assert_problem
from tests.support import wait_for

pytestmark = pytest.mark.slow

ALL = {
    "email": {"subject": "s", "text": "{{ n }}"},
    "sms": {"text": "{{ n }}"},
    "webhook": {"text": "{{ n }}"},
}


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    s = stack_factory(NOTIFICATIONS_SEND_TIMEOUT_SECONDS="3", NOTIFICATIONS_LEASE_SECONDS="5")
    s.start_worker(concurrency=2)
    s.start_sweeper()
    s.template("all", ALL, {"n": 1})
    return s


def hook_user(stack: Stack) -> tuple[str, str]:
    name = f"h{uuid.uuid4().hex[:8]}"
    return stack.user(webhook_url=stack.hook_url(name)), name


def statuses(delivery: dict[str, Any]) -> list[str]:
    return [a["status"] for a in delivery["trail"]]


def test_transient_errors_are_retried_after_the_retry_after_the_receiver_asked(
    stack: Stack,
) -> None:
    user, name = hook_user(stack)
    stack.control(f"webhook:{name}", "fail_n", count=2, retry_after=1)
    sent = stack.send(user_id=user, template="all", data={"n": 1}, channels=["webhook"])
    (d,) = stack.wait_done(sent["id"])["deliveries"]
    assert d["status"] == "delivered" and d["attempts"] == 3
    assert statuses(d) == ["queued", "retrying", "retrying", "delivered"]
    assert "HTTP 503" in d["trail"][1]["error"]
    # Backoff alone is at most 0.4 s here: the gaps show the 1 s Retry-After was honoured.
    times = [a["at"] for a in d["trail"]]
    assert times[2] - times[1] >= 1.0 and times[3] - times[2] >= 1.0


def test_permanent_errors_are_not_retried_and_can_be_replayed(stack: Stack) -> None:
    user, name = hook_user(stack)
    stack.control(f"webhook:{name}", "reject")
    sent = stack.send(user_id=user, template="all", data={"n": 1}, channels=["webhook"])
    (d,) = stack.wait_done(sent["id"])["deliveries"]
    assert d["status"] == "failed" and d["attempts"] == 1 and "HTTP 400" in d["error"]
    with stack.http as c:
        letters = {x["id"]: x for x in c.get("/api/dead-letters").json()["items"]}
        assert letters[d["id"]]["status"] == "failed"
        stack.control(f"webhook:{name}", "ok")
        replayed = c.post(f"/api/dead-letters/{d['id']}/replay", headers=ADMIN)
        assert replayed.status_code == 202
        assert_problem(c.post(f"/api/dead-letters/{d['id']}/replay", headers=ADMIN), 409)
        assert_problem(c.post("/api/dead-letters/nope/replay", headers=ADMIN), 404)
    (d,) = stack.wait_done(sent["id"])["deliveries"]
    assert d["status"] == "delivered" and statuses(d)[-2:] == ["queued", "delivered"]


def test_a_bounced_address_is_not_retried(stack: Stack) -> None:
    user = stack.user(email="bounce@example.com")
    sent = stack.send(user_id=user, template="all", data={"n": 1}, channels=["email"])
    (d,) = stack.wait_done(sent["id"])["deliveries"]
    assert d["status"] == "bounced" and d["attempts"] == 1 and "550" in d["error"]


def test_exhausted_retries_become_dead_letters(stack: Stack) -> None:
    user, name = hook_user(stack)
    stack.control(f"webhook:{name}", "fail")
    sent = stack.send(user_id=user, template="all", data={"n": 1}, channels=["webhook"])
    (d,) = stack.wait_done(sent["id"], timeout=40)["deliveries"]
    assert d["status"] == "dead" and d["attempts"] == 3
    with stack.http as c:
        assert d["id"] in [x["id"] for x in c.get("/api/dead-letters").json()["items"]]
        # The endpoint's own circuit opened (3 failures in a row); the others' did not.
        circuits = {p["name"]: p for p in c.get("/api/providers").json()}
        endpoint = next(p for n, p in circuits.items() if name in n)
        assert endpoint["state"] == "open" and circuits["smtp"]["state"] == "closed"


def test_a_failing_sms_provider_fails_over_and_its_circuit_opens(stack: Stack) -> None:
    stack.control("sms_a", "fail")
    users = [stack.user(phone=f"+1555{i:07d}") for i in range(5)]
    sent = [
        stack.send(user_id=u, template="all", data={"n": i}, channels=["sms"])
        for i, u in enumerate(users)
    ]
    done = [stack.wait_done(s["id"])["deliveries"][0] for s in sent]
    assert all(d["status"] == "sent" and d["provider"] == "sms_b" for d in done)
    with stack.http as c:
        circuits = {p["name"]: p for p in c.get("/api/providers").json()}
        assert circuits["sms_a"]["state"] == "open" and circuits["sms_b"]["state"] == "closed"
        metrics = wait_for(
            lambda: (
                t
                if 'notifications_provider_circuit_state{provider="sms_a",state="open"} 1.0'
                in (t := c.get("/metrics").text)
                else None
            )
        )
        assert 'provider="sms_b",state="closed"} 1.0' in metrics
    # With the circuit open, sms_a is not called: 3 failures open it (a 4th may have been in
    # flight in the other pool process when it opened), the rest go straight to sms_b.
    tried_a = sum(1 for d in done for a in d["trail"] if a["provider"] == "sms_a")
    assert 3 <= tried_a <= 4 < len(users)
    # It recovers: after the reset (1 s) one probe goes through and closes the circuit.
    stack.control("sms_a", "ok")
    time.sleep(1.2)
    probe = stack.send(user_id=users[0], template="all", data={"n": 9}, channels=["sms"])
    assert stack.wait_done(probe["id"])["deliveries"][0]["provider"] == "sms_a"
    with stack.http as c:
        assert {p["name"]: p["state"] for p in c.get("/api/providers").json()}["sms_a"] == "closed"


def test_a_worker_killed_mid_send_loses_nothing(stack: Stack) -> None:
    user, name = hook_user(stack)
    stack.control(f"webhook:{name}", "slow", delay=2)
    sent = stack.send(user_id=user, template="all", data={"n": 1}, channels=["webhook"])
    wait_for(lambda: stack.status(sent["id"])["deliveries"][0]["status"] == "sending", 10)
    time.sleep(0.3)  # the POST is on its way
    worker = stack.workers[0]
    for pid in worker.children():
        worker.kill_child(pid)
    stack.control(f"webhook:{name}", "ok")
    (d,) = stack.wait_done(sent["id"], timeout=30)["deliveries"]
    assert d["status"] == "delivered"
    assert any("lost mid-send" in (a["error"] or "") for a in d["trail"])
    # The receiver saw the delivery id twice: why receivers dedupe on it.
    seen = [m for m in stack.received("webhook") if m["name"] == name]
    assert {m["headers"]["notifications-delivery-id"] for m in seen} == {d["id"]}
    assert len(seen) == 2


def test_a_redis_restart_loses_nothing(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    redis = RedisProcess(data_dir=Path(tmp_path_factory.mktemp("r"))).start()
    try:
        s = stack_factory(redis_url=redis.url, NOTIFICATIONS_LEASE_SECONDS="3")
        s.template("all", ALL, {"n": 1})
        users = [s.user(email=f"r{i}@example.com") for i in range(5)]
        # Accepted while no worker runs: the messages wait in Redis, which then dies.
        sent = [
            s.send(user_id=u, template="all", data={"n": i}, channels=["email"])
            for i, u in enumerate(users)
        ]
        redis.kill()
        redis.start()
        s.start_worker(concurrency=1)
        s.start_sweeper()
        for n in sent:
            assert s.wait_done(n["id"], timeout=30)["deliveries"][0]["status"] == "sent"
        got = sorted(m["to"][0] for m in s.received("email"))
        assert got == sorted(f"r{i}@example.com" for i in range(5))
    finally:
        redis.stop()


def test_a_failing_channel_never_slows_the_healthy_one(
    stack_factory: Callable[..., Stack],
) -> None:
    s = stack_factory(NOTIFICATIONS_SEND_TIMEOUT_SECONDS="2", NOTIFICATIONS_BREAKER_FAILURES="100")
    s.template("all", ALL, {"n": 1})
    s.start_worker(queues=[queue_for("sms")], concurrency=1)
    s.start_worker(queues=[queue_for("webhook")], concurrency=1)
    s.start_sweeper()
    hook = f"h{uuid.uuid4().hex[:8]}"
    user = s.user(phone="+15550009999", webhook_url=s.hook_url(hook))
    # Warm both pools up (a pool process's first task pays its start-up), then fail SMS.
    s.wait_done(
        s.send(user_id=user, template="all", data={"n": 0}, channels=["sms", "webhook"])["id"]
    )
    s.control("sms_a", "timeout")
    s.control("sms_b", "timeout")
    started = time.monotonic()
    sent = [
        s.send(user_id=user, template="all", data={"n": i}, channels=["sms", "webhook"])
        for i in range(6)
    ]
    wait_for(lambda: len([m for m in s.received("webhook") if m["name"] == hook]) == 7, 20)
    elapsed = time.monotonic() - started
    # Each SMS takes 2 x 2 s of timeouts: one worker pool serving both queues would hold
    # the webhooks behind them for ~24 s. Separate queues let them through at once (the
    # bound is loose for a loaded machine).
    assert elapsed < 12, elapsed
    pending = [
        d["status"] for n in sent for d in s.status(n["id"])["deliveries"] if d["channel"] == "sms"
    ]
    assert any(st in ("queued", "sending", "retrying") for st in pending)
    s.control("sms_a", "ok")  # let the SMS pool finish quickly at teardown
    s.control("sms_b", "ok")


def test_a_webhook_to_a_private_address_is_refused_by_the_worker(
    stack_factory: Callable[..., Stack],
) -> None:
    s = stack_factory(NOTIFICATIONS_ALLOW_PRIVATE_WEBHOOKS="false")
    s.template("all", ALL, {"n": 1})
    s.start_worker(queues=[queue_for("webhook")], concurrency=1)
    hook = f"h{uuid.uuid4().hex[:8]}"
    # The sink, on 127.0.0.1, by a name: the worker resolves it and refuses the address.
    user = s.user(webhook_url=s.hook_url(hook).replace("127.0.0.1", "localhost"))
    sent = s.send(user_id=user, template="all", data={"n": 1}, channels=["webhook"])
    (d,) = s.wait_done(sent["id"])["deliveries"]
    assert d["status"] == "failed" and d["attempts"] == 1
    assert "target refused: localhost resolves to non-public" in d["error"]
    assert not [m for m in s.received("webhook") if m["name"] == hook]
