"""Load scenario: producers submitting a mix of job types and polling their status
(make load-task_queue).

Each simulated user submits jobs (~40% of its actions: mostly no-op and short sleeps, some
CPU and some flaky ones) and polls the status of jobs it submitted (~60%), as a web backend
that enqueues work and shows its progress would.

    make run-task_queue     # in one terminal
    make load-task_queue    # in another (LOAD_USERS, LOAD_TIME; --host or LOCUST_HOST)

Environment: TASK_QUEUE_API_KEY (default the development admin key).
"""

from __future__ import annotations

import os
import random
from typing import Any

from locust import HttpUser, between, task

MIX: list[tuple[str, dict[str, Any], int]] = [
    ("noop", {}, 50),
    ("sleep", {"seconds": 0.2}, 20),
    ("cpu", {"rounds": 5000}, 15),
    ("flaky", {"failures": 1}, 10),
    ("add", {"value": 1}, 5),
]


class Producer(HttpUser):
    host = "http://127.0.0.1:8002"
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.key = os.environ.get("TASK_QUEUE_API_KEY", "dev-admin-key")
        self.jobs: list[str] = []

    @task(4)
    def submit(self) -> None:
        type_name, args, _ = random.choices(MIX, weights=[m[2] for m in MIX])[0]
        with self.client.post(
            "/api/jobs",
            json={"type": type_name, "args": args},
            headers={"x-api-key": self.key},
            name="/api/jobs [submit]",
            catch_response=True,
        ) as resp:
            if resp.status_code == 202:
                self.jobs.append(resp.json()["id"])
                self.jobs = self.jobs[-50:]
            else:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")

    @task(6)
    def poll(self) -> None:
        if not self.jobs:
            return
        job_id = random.choice(self.jobs)
        self.client.get(f"/api/jobs/{job_id}", name="/api/jobs/{id}")
