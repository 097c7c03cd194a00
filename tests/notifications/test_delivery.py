"""End to end on real workers: each channel delivers real traffic to the local sinks, the
trail records every attempt, the webhook is signed, idempotency holds under concurrency, also
across two API instances and two worker pools on one Redis and database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from notifications.dispatch import queue_for
from notifications.signing import SIGNATURE_HEADER, verify
from notifications.stack import ADMIN, WEBHOOK_SECRET, Stack
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow

WELCOME = {
    "email": {
        "subject": "Hi {{ name }}",
        "text": "Welcome, {{ name }}!",
        "html": "<b>{{ name }}</b>",
    },
    "sms": {"text": "Welcome {{ name }}"},
    "webhook": {"text": "welcome {{ name }}"},
    "inapp": {"title": "Welcome", "text": "Hello {{ name }}"},
}


@pytest.fixture(scope="module")
def welcome(stack: Stack) -> str:
    stack.template("welcome", WELCOME, {"name": "Ada"})
    return "welcome"


def test_every_channel_delivers_real_traffic(stack: Stack, welcome: str) -> None:
    hook = f"h{uuid.uuid4().hex[:8]}"
    user = stack.user(
        email="ada@example.com", phone="+15550001111", webhook_url=stack.hook_url(hook)
    )
    sent = stack.send(user_id=user, template=welcome, data={"name": "Ada"})
    done = stack.wait_done(sent["id"])
    by_channel = {d["channel"]: d for d in done["deliveries"]}
    assert by_channel["email"]["status"] == "sent"
    assert by_channel["sms"]["status"] == "sent" and by_channel["sms"]["provider"] == "sms_a"
    assert by_channel["webhook"]["status"] == "delivered"
    assert by_channel["inapp"]["status"] == "delivered"
    for d in done["deliveries"]:
        assert d["trail"][0]["status"] == "queued"
        assert d["trail"][-1]["status"] == d["status"] and d["trail"][-1]["at"]
    mail = [m for m in stack.received("email") if m["to"] == ["ada@example.com"]]
    assert mail and mail[0]["subject"] == "Hi Ada" and "Welcome, Ada!" in mail[0]["text"]
    sms = [m for m in stack.received("sms") if m["to"] == "+15550001111"]
    assert sms and sms[0]["text"] == "Welcome Ada"
    hooks = [m for m in stack.received("webhook") if m["name"] == hook]
    assert len(hooks) == 1
    body = hooks[0]["body"].encode()
    verify(WEBHOOK_SECRET, body, hooks[0]["headers"][SIGNATURE_HEADER.lower()])
    assert json.loads(body)["id"] == hooks[0]["headers"]["notifications-delivery-id"]
    with stack.http as c:
        inbox = c.get(f"/api/users/{user}/inbox").json()
    assert inbox["unread"] == 1 and inbox["items"][0]["body"] == "Hello Ada"


def test_idempotency_key_sends_once_under_concurrent_submits(stack: Stack, welcome: str) -> None:
    user = stack.user(email="grace@example.com")
    key = uuid.uuid4().hex
    body = {"user_id": user, "template": welcome, "data": {"name": "Grace"}, "channels": ["email"]}

    def submit(_: int) -> httpx.Response:
        with stack.http as c:
            return c.post(
                "/api/notifications", json=body, headers={**ADMIN, "Idempotency-Key": key}
            )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 7
    stack.wait_done(ids.pop())
    wait_for(lambda: [m for m in stack.received("email") if m["to"] == ["grace@example.com"]])
    mails = [m for m in stack.received("email") if m["to"] == ["grace@example.com"]]
    assert len(mails) == 1
    with stack.http as c:
        other = c.post(
            "/api/notifications",
            json={**body, "data": {"name": "Other"}},
            headers={**ADMIN, "Idempotency-Key": key},
        )
    assert other.status_code == 422 and "different request" in other.json()["detail"]


def test_two_instances_share_idempotency_and_deliver_each_notification_once(
    stack_factory: Callable[..., Stack],
) -> None:
    s = stack_factory()
    second = ServiceProcess("notifications", s.env, log_path=s.tmp / "api2.log")
    try:
        second.start(timeout=60)
        for _ in range(2):  # two worker pools, two sweepers: one per instance
            s.start_worker(queues=[queue_for("webhook")], concurrency=2)
            s.start_sweeper()
        s.template("welcome", WELCOME, {"name": "Ada"})
        hook = f"h{uuid.uuid4().hex[:8]}"
        user = s.user(webhook_url=s.hook_url(hook))
        keys = [uuid.uuid4().hex for _ in range(10)]
        apis = [s.api.url, second.url]

        def submit(i: int) -> tuple[str, httpx.Response]:
            # Each key four times, twice to each instance, all at once.
            key = keys[i // 4]
            body = {"user_id": user, "template": "welcome", "data": {"name": key}}
            with httpx.Client(base_url=apis[i % 2], timeout=30) as c:
                resp = c.post(
                    "/api/notifications",
                    json={**body, "channels": ["webhook"]},
                    headers={**ADMIN, "Idempotency-Key": key},
                )
            return key, resp

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(4 * len(keys))))
        assert all(r.status_code == 202 for _, r in answers), [r.text for _, r in answers]
        ids = {key: {r.json()["id"] for k, r in answers if k == key} for key in keys}
        assert all(len(found) == 1 for found in ids.values()), ids
        replayed = [r.headers.get("idempotent-replayed") == "true" for _, r in answers]
        assert sum(replayed) == 3 * len(keys)
        deliveries = set()
        for (notification,) in ids.values():
            (d,) = s.wait_done(notification)["deliveries"]
            assert d["status"] == "delivered"
            deliveries.add(d["id"])
        got = [m for m in s.received("webhook") if m["name"] == hook]
        delivered = [m["headers"]["notifications-delivery-id"] for m in got]
        assert sorted(delivered) == sorted(deliveries)  # each one, once
    finally:
        second.stop()
