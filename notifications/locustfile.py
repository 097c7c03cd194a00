"""A realistic load: product events to users (in-app, mostly), a few topic broadcasts,
inbox reads and status polls. Run against `make run-notifications`:

    make load-notifications LOAD_USERS=50 LOAD_TIME=60s
"""

from __future__ import annotations

import random
import uuid

from locust import HttpUser, between, events, task

ADMIN = {"x-api-key": "dev-admin-key"}
USERS = [f"load-{i}" for i in range(200)]


@events.test_start.add_listener
def setup(environment, **_):  # type: ignore[no-untyped-def]
    client = environment.runner and environment.host
    if not client:
        return
    import httpx

    with httpx.Client(base_url=environment.host, headers=ADMIN, timeout=30) as c:
        c.put(
            "/api/templates/load-event",
            json={
                "variants": {"inapp": {"title": "{{ kind }}", "text": "{{ kind }} #{{ n }}"}},
                "example": {"kind": "like", "n": 1},
            },
        )
        for user in USERS:
            c.put(f"/api/users/{user}", json={"timezone": "UTC"})
        c.post("/api/topics/load-all/subscribers", json={"user_ids": USERS[:50]})


class App(HttpUser):
    wait_time = between(0.1, 0.5)

    @task(10)
    def event(self) -> None:
        body = {
            "user_id": random.choice(USERS),
            "template": "load-event",
            "data": {
                "kind": random.choice(["like", "comment", "follow"]),
                "n": random.randint(1, 99),
            },
        }
        headers = {**ADMIN, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post(
            "/api/notifications", json=body, headers=headers, name="send", catch_response=True
        ) as r:
            if r.status_code == 202:
                self.last = r.json()["id"]

    @task(5)
    def inbox(self) -> None:
        self.client.get(f"/api/users/{random.choice(USERS)}/inbox?filter=unread", name="inbox")

    @task(3)
    def status(self) -> None:
        last = getattr(self, "last", None)
        if last:
            self.client.get(f"/api/notifications/{last}", name="status")

    @task(1)
    def broadcast(self) -> None:
        body = {"topic": "load-all", "template": "load-event", "data": {"kind": "news", "n": 1}}
        self.client.post("/api/notifications", json=body, headers=ADMIN, name="broadcast")
