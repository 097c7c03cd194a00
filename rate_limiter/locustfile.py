"""Load scenario: API clients asking the service for decisions (make load-rate_limiter).

Most traffic is per-address checks from many addresses; a few heavy API keys hit their
limits and get refused (a refusal is a normal 200 verdict, not a failure); some peek at
their usage. Run against a service started with the example rules:

    make run-rate_limiter   # in one terminal
    make load-rate_limiter  # in another (LOAD_USERS, LOAD_TIME)
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task


class ApiClient(FastHttpUser):
    host = "http://127.0.0.1:8004"
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        self.address = f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.1"
        self.api_key = f"key-{random.randint(1, 20)}"

    def _check(self, entries: list[tuple[str, str]], name: str) -> None:
        body = {"domain": "api", "descriptors": [{"key": k, "value": v} for k, v in entries]}
        with self.client.post("/api/check", json=body, name=name, catch_response=True) as resp:
            if resp.status_code != 200 or "allowed" not in resp.json():
                resp.failure(f"unexpected {resp.status_code}")

    @task(10)
    def per_address(self) -> None:
        self._check([("remote_address", self.address)], "check remote_address")

    @task(5)
    def per_key_and_route(self) -> None:
        self._check(
            [("api_key", self.api_key), ("route", "POST /api/links")], "check api_key+route"
        )

    @task(1)
    def usage(self) -> None:
        self.client.get(
            "/api/usage",
            params={"domain": "api", "key": "api_key", "value": self.api_key},
            name="usage",
        )
