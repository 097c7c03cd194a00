"""The whole notifications stack as real processes on free loopback ports: the API, Celery
workers per channel queue, the sweeper and the local sinks. The tests, the benchmark and the
experiment all start it this way (a module they may all import: benchmarks never import the
tests)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from common.celery_workers import CeleryWorker
from common.processes import ChildProcess, ServiceProcess, wait_for
from notifications.dispatch import queue_for
from notifications.settings import CHANNELS

ADMIN = {"x-api-key": "test-admin-key"}
WEBHOOK_SECRET = "test-webhook-secret"
ALL_QUEUES = [queue_for(c) for c in CHANNELS]


@dataclass
class Stack:
    env: dict[str, str]
    api: ServiceProcess
    tmp: Path
    sink_url: str
    broker_url: str
    workers: list[CeleryWorker] = field(default_factory=list)
    children: list[ChildProcess] = field(default_factory=list)

    @property
    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, timeout=10)

    @property
    def sink(self) -> httpx.Client:
        return httpx.Client(base_url=self.sink_url, timeout=10)

    def start_worker(
        self, *, queues: list[str] | None = None, concurrency: int = 2, **env: str
    ) -> CeleryWorker:
        worker = CeleryWorker(
            [],
            {**self.env, **env},
            log_path=self.tmp / f"worker{len(self.workers)}.log",
            broker_url=self.broker_url,
            concurrency=concurrency,
            queues=queues or ALL_QUEUES,
            module="notifications.worker",
        )
        self.workers.append(worker)
        return worker.start(timeout=60)

    def start_sweeper(self) -> ChildProcess:
        child = ChildProcess(["-m", "notifications.sweeper"], self.env, self.tmp / "sweeper.log")
        self.children.append(child)
        return child

    def user(self, user_id: str | None = None, **fields: Any) -> str:
        user_id = user_id or f"u-{uuid.uuid4().hex[:10]}"
        with self.http as c:
            resp = c.put(f"/api/users/{user_id}", json=fields, headers=ADMIN)
        assert resp.status_code in (200, 201), resp.text
        return user_id

    def prefs(self, user_id: str, **prefs: Any) -> None:
        with self.http as c:
            resp = c.put(f"/api/users/{user_id}/preferences", json=prefs, headers=ADMIN)
        assert resp.status_code == 200, resp.text

    def template(self, name: str, variants: dict[str, Any], example: Any = None) -> dict[str, Any]:
        with self.http as c:
            resp = c.put(
                f"/api/templates/{name}",
                json={"variants": variants, "example": example or {}},
                headers=ADMIN,
            )
        assert resp.status_code in (200, 201), resp.text
        return resp.json()  # type: ignore[no-any-return]

    def send(self, headers: dict[str, str] | None = None, **body: Any) -> dict[str, Any]:
        with self.http as c:
            resp = c.post("/api/notifications", json=body, headers={**ADMIN, **(headers or {})})
        assert resp.status_code == 202, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def status(self, notification_id: str) -> dict[str, Any]:
        with self.http as c:
            resp = c.get(f"/api/notifications/{notification_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def wait_done(self, notification_id: str, timeout: float = 30) -> dict[str, Any]:
        """Poll until every delivery is terminal."""

        def done() -> dict[str, Any] | None:
            n = self.status(notification_id)
            return n if n["status"] == "done" else None

        return wait_for(done, timeout, interval=0.1)  # type: ignore[no-any-return]

    def received(self, kind: str) -> list[dict[str, Any]]:
        with self.sink as c:
            return c.get("/messages", params={"kind": kind}).json()  # type: ignore[no-any-return]

    def control(self, target: str, mode: str, **extra: Any) -> None:
        with self.sink as c:
            c.post("/control", json={"target": target, "mode": mode, **extra}).raise_for_status()

    def hook_url(self, name: str) -> str:
        return f"{self.sink_url}/webhook/{name}"

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        for child in self.children:
            child.stop()
        self.api.stop()


def stack_env(
    redis_url: str, database_url: str, data_dir: Path, smtp: int, http: int
) -> dict[str, str]:
    sink = f"http://127.0.0.1:{http}"
    return {
        "NOTIFICATIONS_REDIS_URL": redis_url,
        "NOTIFICATIONS_DATABASE_URL": database_url,
        "NOTIFICATIONS_DATA_DIR": str(data_dir),
        "NOTIFICATIONS_ADMIN_KEY": "test-admin-key",
        "NOTIFICATIONS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "NOTIFICATIONS_ACCESS_LOG": "false",
        "NOTIFICATIONS_LOG_FORMAT": "json",
        # The tests' receivers (the sinks) are on loopback.
        "NOTIFICATIONS_ALLOW_PRIVATE_WEBHOOKS": "true",
        "NOTIFICATIONS_SMTP_PORT": str(smtp),
        "NOTIFICATIONS_SMS_A_URL": sink,
        "NOTIFICATIONS_SMS_B_URL": sink,
        "NOTIFICATIONS_SEND_TIMEOUT_SECONDS": "1",
        "NOTIFICATIONS_BACKOFF_BASE_SECONDS": "0.1",
        "NOTIFICATIONS_BACKOFF_CAP_SECONDS": "0.4",
        "NOTIFICATIONS_MAX_ATTEMPTS": "3",
        "NOTIFICATIONS_BREAKER_FAILURES": "3",
        "NOTIFICATIONS_BREAKER_RESET_SECONDS": "1",
        "NOTIFICATIONS_LEASE_SECONDS": "4",
        "NOTIFICATIONS_SWEEP_INTERVAL_SECONDS": "0.2",
        "NOTIFICATIONS_USER_RATE_PER_MINUTE": "0",
    }
