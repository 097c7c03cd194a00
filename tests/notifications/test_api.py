"""The API's resources and its documented errors, against a real server and workers."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from notifications.app import MIGRATIONS
from notifications.stack import ADMIN, Stack
from notifications.store import Base
from tests.notifications.conftest import assert_problem
from tests.support import migrations_match_models, wait_for

pytestmark = pytest.mark.slow

INAPP = {"inapp": {"title": "{{ title }}", "text": "{{ body }}"}}


@pytest.fixture(scope="module")
def note(stack: Stack) -> str:
    stack.template("note", INAPP, {"title": "T", "body": "B"})
    return "note"


def test_migrations_match_the_models(tmp_path: Any) -> None:
    assert (
        migrations_match_models(f"sqlite:///{tmp_path / 'm.db'}", MIGRATIONS, Base.metadata) == []
    )


def test_writes_need_the_admin_key(stack: Stack) -> None:
    with stack.http as c:
        assert_problem(c.put("/api/users/u1", json={}), 401)
        assert_problem(c.put("/api/users/u1", json={}, headers={"x-api-key": "wrong"}), 401)
        assert_problem(c.post("/api/notifications", json={"user_id": "u1", "template": "x"}), 401)


def test_users_and_preferences(stack: Stack) -> None:
    with stack.http as c:
        created = c.put(
            "/api/users/amy",
            json={"email": "amy@example.com", "timezone": "Asia/Tokyo"},
            headers=ADMIN,
        )
        assert created.status_code == 201 and created.json()["timezone"] == "Asia/Tokyo"
        again = c.put("/api/users/amy", json={"email": "amy@example.com"}, headers=ADMIN)
        assert again.status_code == 200 and again.json()["timezone"] == "UTC"
        assert_problem(c.put("/api/users/amy", json={"timezone": "Mars/Base"}, headers=ADMIN), 422)
        assert_problem(c.put("/api/users/amy", json={"phone": "555"}, headers=ADMIN), 422)
        prefs = {
            "channels": {"marketing": {"email": False}},
            "quiet_hours": {"start": "22:00", "end": "07:00"},
            "digest": {"news": 3600},
        }
        assert c.put("/api/users/amy/preferences", json=prefs, headers=ADMIN).json() == prefs
        assert c.get("/api/users/amy/preferences").json() == prefs
        assert c.get("/api/users/amy").json()["preferences"] == prefs
        bad = {"quiet_hours": {"start": "25:00", "end": "07:00"}}
        assert_problem(c.put("/api/users/amy/preferences", json=bad, headers=ADMIN), 422)
        assert_problem(c.put("/api/users/nobody/preferences", json={}, headers=ADMIN), 404)
        assert_problem(c.get("/api/users/nobody"), 404)


def test_templates_are_versioned_checked_at_put_and_previewed(stack: Stack) -> None:
    name = f"t{uuid.uuid4().hex[:6]}"
    v1 = stack.template(name, {"email": {"subject": "Hi {{ name }}", "text": "x"}}, {"name": "A"})
    assert v1["version"] == 1
    same = stack.template(name, {"email": {"subject": "Hi {{ name }}", "text": "x"}}, {"name": "A"})
    assert same["version"] == 1
    v2 = stack.template(
        name, {"email": {"subject": "Hello {{ name }}", "text": "x"}}, {"name": "A"}
    )
    assert v2["version"] == 2
    with stack.http as c:
        for broken in (
            {"variants": {"sms": {"text": "{{ name"}}},  # syntax
            {"variants": {"sms": {"text": "{{ missing }}"}}, "example": {}},  # undefined
            {"variants": {"sms": {"text": "{{ 1 / 0 }}"}}},  # runtime error
            {"variants": {"sms": {"text": "{{ ''.__class__.__mro__ }}"}}},  # sandbox
        ):
            body = assert_problem(c.put(f"/api/templates/{name}", json=broken, headers=ADMIN), 422)
            assert body["detail"].startswith("sms.text")
        assert c.get(f"/api/templates/{name}").json()["version"] == 2
        assert (
            c.get(f"/api/templates/{name}", params={"version": 1}).json()["variants"]["email"][
                "subject"
            ]
            == "Hi {{ name }}"
        )
        assert [t["version"] for t in c.get(f"/api/templates/{name}/versions").json()] == [1, 2]
        preview = c.post(f"/api/templates/{name}/preview", json={"data": {"name": "Zoe"}}).json()
        assert preview["rendered"]["email"]["subject"] == "Hello Zoe" and preview["version"] == 2
        assert_problem(c.post(f"/api/templates/{name}/preview", json={"data": {}}), 422)
        assert_problem(c.post("/api/templates/none/preview", json={}), 404)
        html = stack.template(
            name, {"email": {"text": "t", "html": "<p>{{ name }}</p>"}}, {"name": "A"}
        )
        out = c.post(f"/api/templates/{name}/preview", json={"data": {"name": "<script>"}}).json()
        assert out["rendered"]["email"]["html"] == "<p>&lt;script&gt;</p>" and html["version"] == 3


def test_a_notification_records_the_template_version_it_used(stack: Stack) -> None:
    name = f"t{uuid.uuid4().hex[:6]}"
    stack.template(name, {"inapp": {"text": "one"}})
    user = stack.user()
    first = stack.send(user_id=user, template=name)
    stack.template(name, {"inapp": {"text": "two"}})
    second = stack.send(user_id=user, template=name)
    assert (first["template_version"], second["template_version"]) == (1, 2)
    stack.wait_done(first["id"])
    stack.wait_done(second["id"])
    with stack.http as c:
        items = c.get(f"/api/users/{user}/inbox").json()["items"]
    # Each notification's item was rendered from the version it recorded (two workers may
    # deliver them in either order, so the inbox's order is not the point).
    bodies = {i["notification_id"]: i["body"] for i in items}
    assert bodies == {first["id"]: "one", second["id"]: "two"}


def test_bad_notifications_are_refused_before_anything_is_sent(stack: Stack, note: str) -> None:
    user = stack.user()
    with stack.http as c:
        cases = [
            ({"template": note}, 422),  # neither user nor topic
            ({"template": note, "user_id": user, "topic": "t"}, 422),
            ({"template": "missing", "user_id": user}, 422),
            ({"template": note, "user_id": "ghost"}, 422),
            ({"template": note, "user_id": user, "data": {"title": "x"}}, 422),  # body missing
            ({"template": note, "user_id": user, "channels": ["fax"]}, 422),
        ]
        for body, status in cases:
            assert_problem(c.post("/api/notifications", json=body, headers=ADMIN), status)
        assert_problem(c.get("/api/notifications/nope"), 404)
        assert_problem(c.get(f"/api/users/{user}/notifications", params={"cursor": "x"}), 422)


def test_preferences_opt_out_but_critical_gets_through(stack: Stack, note: str) -> None:
    user = stack.user()
    stack.prefs(user, channels={"promo": {"inapp": False}})
    data = {"title": "t", "body": "b"}
    skipped = stack.wait_done(
        stack.send(user_id=user, template=note, data=data, category="promo")["id"]
    )
    (d,) = skipped["deliveries"]
    assert d["status"] == "cancelled" and "opted out" in d["error"]
    forced = stack.send(
        user_id=user, template=note, data=data, category="promo", priority="critical"
    )
    assert stack.wait_done(forced["id"])["deliveries"][0]["status"] == "delivered"
    no_email = stack.wait_done(
        stack.send(user_id=user, template=note, data=data, channels=["email"])["id"]
    )
    assert "no email" in no_email["deliveries"][0]["error"]


def test_topics_fan_out_through_each_subscribers_preferences(stack: Stack, note: str) -> None:
    topic = f"topic-{uuid.uuid4().hex[:6]}"
    users = [stack.user() for _ in range(3)]
    stack.prefs(users[2], channels={"general": {"inapp": False}})
    with stack.http as c:
        subs = c.post(f"/api/topics/{topic}/subscribers", json={"user_ids": users}, headers=ADMIN)
        assert sorted(subs.json()["user_ids"]) == sorted(users)
        assert_problem(
            c.post(f"/api/topics/{topic}/subscribers", json={"user_ids": ["ghost"]}, headers=ADMIN),
            404,
        )
    sent = stack.send(topic=topic, template=note, data={"title": "t", "body": "hello all"})
    done = stack.wait_done(sent["id"])
    status = {d["user_id"]: d["status"] for d in done["deliveries"]}
    assert status == {users[0]: "delivered", users[1]: "delivered", users[2]: "cancelled"}
    with stack.http as c:
        assert (
            c.delete(f"/api/topics/{topic}/subscribers/{users[0]}", headers=ADMIN).status_code
            == 204
        )
        assert_problem(c.delete(f"/api/topics/{topic}/subscribers/{users[0]}", headers=ADMIN), 404)
        assert users[0] not in c.get(f"/api/topics/{topic}/subscribers").json()["user_ids"]
        page = c.get(f"/api/users/{users[1]}/notifications").json()
    assert [n["id"] for n in page["items"]] == [sent["id"]]


def test_a_users_notifications_page_by_cursor(stack: Stack, note: str) -> None:
    user = stack.user()
    ids = [
        stack.send(user_id=user, template=note, data={"title": "t", "body": str(i)})["id"]
        for i in range(3)
    ]
    with stack.http as c:
        first = c.get(f"/api/users/{user}/notifications", params={"limit": 2}).json()
        rest = c.get(
            f"/api/users/{user}/notifications", params={"limit": 2, "cursor": first["next_cursor"]}
        ).json()
    assert [n["id"] for n in first["items"] + rest["items"]] == ids[::-1]
    assert rest["next_cursor"] is None


def test_the_inbox_reads_archives_counts_and_streams(stack: Stack, note: str) -> None:
    user = stack.user()
    frames: list[dict[str, Any]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", f"{stack.api.url}/api/users/{user}/inbox/stream", timeout=20
        ) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            for line in resp.iter_lines():
                if line.startswith(": connected"):
                    connected.set()
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                    if len(frames) == 2:
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(10)
    for body in ("first", "second"):
        stack.wait_done(
            stack.send(user_id=user, template=note, data={"title": "t", "body": body})["id"]
        )
    thread.join(15)
    assert sorted(f["body"] for f in frames) == ["first", "second"]
    with stack.http as c:
        page = c.get(f"/api/users/{user}/inbox").json()
        assert page["unread"] == 2
        newest, oldest = page["items"]
        assert c.post(f"/api/users/{user}/inbox/{newest['id']}/read", headers=ADMIN).json()["read"]
        assert c.get(f"/api/users/{user}/inbox/unread-count").json() == {"unread": 1}
        assert c.post(f"/api/users/{user}/inbox/{oldest['id']}/archive", headers=ADMIN).json()[
            "archived"
        ]
        assert [
            i["id"]
            for i in c.get(f"/api/users/{user}/inbox", params={"filter": "archived"}).json()[
                "items"
            ]
        ] == [oldest["id"]]
        assert c.get(f"/api/users/{user}/inbox", params={"filter": "unread"}).json()["items"] == []
        assert_problem(c.post(f"/api/users/other/inbox/{newest['id']}/read", headers=ADMIN), 404)
        # A reconnect with Last-Event-ID replays what came after it.
        with httpx.stream(
            "GET",
            f"{stack.api.url}/api/users/{user}/inbox/stream",
            headers={"Last-Event-ID": str(oldest["id"])},
            timeout=10,
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["id"] == newest["id"]
                    break


def test_the_inbox_stream_ends_after_its_lifetime_and_says_when_to_reconnect(
    stack_factory: Callable[..., Stack],
) -> None:
    short = stack_factory(NOTIFICATIONS_STREAM_LIFETIME_SECONDS="1")
    started = time.monotonic()
    with httpx.stream("GET", f"{short.api.url}/api/users/u1/inbox/stream", timeout=20) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = list(resp.iter_lines())  # returns only because the server ends the stream
    assert 1.0 <= time.monotonic() - started < 15
    assert lines[:2] == [": connected", "retry: 1000"]


def test_cancel_stops_what_is_still_waiting(stack: Stack, note: str) -> None:
    user = stack.user()
    later = stack.send(
        user_id=user,
        template=note,
        data={"title": "t", "body": "b"},
        send_at="2099-01-01T00:00:00Z",
    )
    with stack.http as c:
        assert (
            c.post(f"/api/notifications/{later['id']}/cancel", headers=ADMIN).json()["cancelled"]
            == 1
        )
        assert (
            c.post(f"/api/notifications/{later['id']}/cancel", headers=ADMIN).json()["cancelled"]
            == 0
        )
        assert_problem(c.post("/api/notifications/nope/cancel", headers=ADMIN), 404)
    d = stack.status(later["id"])["deliveries"][0]
    assert d["status"] == "cancelled" and [a["status"] for a in d["trail"]] == [
        "queued",
        "cancelled",
    ]


def test_metrics_and_providers_are_exposed(stack: Stack) -> None:
    with stack.http as c:
        names = {p["name"]: p["state"] for p in c.get("/api/providers").json()}
        assert names == {
            "smtp": "closed",
            "sms_a": "closed",
            "sms_b": "closed",
            "webhook": "closed",
            "inapp": "closed",
        }
        wait_for(lambda: "notifications_provider_circuit_state" in c.get("/metrics").text)
        assert c.get("/readyz").status_code == 200
