"""End to end on real workers: each channel delivers real traffic to the local sinks, the
trail records every attempt, the webhook is signed, idempotency holds under concurrency."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from notifications.signing import SIGNATURE_HEADER, verify
from notifications.stack import ADMIN, WEBHOOK_SECRET, Stack
from tests.support import wait_for

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
