"""Load scenario: a shortener's real traffic, overwhelmingly redirects (make load-url_shortener).

Each simulated user follows short links (~90%), a few create links (~8%) and a few read a
link's stats (~2%). Link popularity is heavy-tailed, as on every public shortener: a pool of
links is created once per locust process (through the bulk API) and redirects pick codes
from it with Zipf weights (s = 1.1), so a few hot codes take most hits (the caches' job)
while a long tail still reaches Redis and SQL.

    make run-url_shortener    # in one terminal
    make load-url_shortener   # in another (LOAD_USERS, LOAD_TIME; --host or LOCUST_HOST)

Environment: URL_SHORTENER_URL and URL_SHORTENER_API_KEY, defaulting (as the client's do) to
what the server on this machine reads: its port and its admin key (URL_SHORTENER_ADMIN_KEY,
or .env), so a non-default admin key needs nothing more; URL_SHORTENER_LOAD_POOL (links in
the pool, default 1000).

Link creation is rate limited per client address (URL_SHORTENER_CREATE_RATE_PER_MINUTE,
default 120), and every locust user shares one address; a 429 is the service working as
designed, so it is counted apart under "/api/links [429 rate limited]", not as a
failure. Run the service with URL_SHORTENER_CREATE_RATE_PER_MINUTE=0 to measure creation
without the limit.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from typing import Any, ClassVar

from gevent.lock import Semaphore
from locust import HttpUser, between, task
from locust.exception import StopUser

from url_shortener.client import cli

BULK_CHUNK = 1000  # the API's limit per bulk request
ZIPF_S = 1.1


def zipf_cum_weights(n: int, s: float = ZIPF_S) -> list[float]:
    """Cumulative Zipf weights for ranks 1..n (weight of rank k is 1 / k**s)."""
    return list(itertools.accumulate(1.0 / k**s for k in range(1, n + 1)))


def _json(resp: Any) -> dict[str, Any]:
    """The body as a dict ({} when it is not JSON), so a bad body is a failure, not a crash."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


# The same defaults as `python -m url_shortener.client`: the server's own settings.
DEFAULT_URL, DEFAULT_KEY = cli.defaults()


class ShortenerUser(HttpUser):
    host = os.environ.get("URL_SHORTENER_URL") or DEFAULT_URL
    wait_time = between(0.0, 0.1)

    # One pool per locust process, shared by its users: popularity is global, not per user.
    pool: ClassVar[list[str]] = []
    cum_weights: ClassVar[list[float]] = []
    _pool_lock: ClassVar[Semaphore] = Semaphore()

    def on_start(self) -> None:
        self.headers = {"x-api-key": os.environ.get("URL_SHORTENER_API_KEY") or DEFAULT_KEY or ""}
        with ShortenerUser._pool_lock:  # the first user builds the pool, the others wait
            if not ShortenerUser.pool:
                self._build_pool(int(os.environ.get("URL_SHORTENER_LOAD_POOL", "1000")))
        if not ShortenerUser.pool:
            raise StopUser()  # the service refused; the failed bulk request says why

    def _build_pool(self, size: int) -> None:
        run = uuid.uuid4().hex[:8]
        codes: list[str] = []
        for start in range(0, size, BULK_CHUNK):
            count = min(BULK_CHUNK, size - start)
            links = [
                {"url": f"https://example.com/load/{run}/{n}", "tags": ["load"]}
                for n in range(start, start + count)
            ]
            with self.client.post(
                "/api/links/bulk",
                json={"links": links},
                headers=self.headers,
                name="/api/links/bulk (pool)",
                catch_response=True,
            ) as resp:
                if resp.status_code != 200:
                    resp.failure(f"pool not created: {resp.status_code} {resp.text[:200]}")
                    return
                results = _json(resp).get("results", [])
                codes += [r["link"]["code"] for r in results if r["status"] == 201]
        random.shuffle(codes)  # rank (popularity) unrelated to creation order
        ShortenerUser.cum_weights = zipf_cum_weights(len(codes))
        ShortenerUser.pool = codes

    def _popular_code(self) -> str:
        return random.choices(self.pool, cum_weights=self.cum_weights)[0]

    @task(90)
    def follow(self) -> None:
        with self.client.get(
            f"/{self._popular_code()}",
            allow_redirects=False,
            name="/{code}",
            catch_response=True,
        ) as resp:
            if resp.status_code == 302 and resp.headers.get("location"):
                resp.success()
            else:
                resp.failure(f"expected a 302 redirect, got {resp.status_code}")

    @task(8)
    def create(self) -> None:
        body: dict[str, Any] = {"url": f"https://example.org/new/{uuid.uuid4().hex}"}
        if random.random() < 0.2:
            body["tags"] = ["campaign"]
        with self.client.post(
            "/api/links",
            json=body,
            headers=self.headers,
            name="/api/links",
            catch_response=True,
        ) as resp:
            if resp.status_code == 201 and "code" in _json(resp):
                resp.success()
            elif resp.status_code == 429 and resp.headers.get("retry-after"):
                resp.request_meta["name"] = "/api/links [429 rate limited]"
                resp.success()
            else:
                resp.failure(f"expected 201, got {resp.status_code} {resp.text[:200]}")

    @task(2)
    def stats(self) -> None:
        with self.client.get(
            f"/api/links/{self._popular_code()}/stats",
            headers=self.headers,
            name="/api/links/{code}/stats",
            catch_response=True,
        ) as resp:
            if resp.status_code == 200 and "total" in _json(resp):
                resp.success()
            else:
                resp.failure(f"expected 200, got {resp.status_code}")
