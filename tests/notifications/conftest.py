"""The notification service on real processes: per test module one stack (API, sweeper, the
local SMTP/SMS/webhook sinks and real Celery worker pools) on the session's Redis (its own
database number) and a SQL database of its own. Tests talk HTTP to the API and read what the
sinks received."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis as sync_redis

from common.redis_server import RedisProcess, free_port
from notifications.stack import (  # re-exported for the test modules
    Stack,
    stack_env,
)
from tests.support import ChildProcess, Databases, ServiceProcess, wait_for


@pytest.fixture(scope="module")
def stack_factory(
    redis_server: RedisProcess,
    module_databases: Databases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Stack]]:
    """Start a stack: sinks and API (add workers and the sweeper on it). `redis_url` gives
    another Redis (failure tests); `db` another Redis database number."""
    stacks: list[Stack] = []

    def make(*, redis_url: str | None = None, **env: str) -> Stack:
        tmp = tmp_path_factory.mktemp("notify")
        url = redis_url or f"redis://127.0.0.1:{redis_server.port}/{8 + len(stacks)}"
        with sync_redis.Redis.from_url(url) as r:
            r.flushdb()
        smtp, http = free_port(), free_port()
        base = stack_env(url, module_databases.new("notifications"), tmp, smtp, http)
        full = {**base, **env}
        sinks = ChildProcess(
            ["-m", "notifications.sinks", "--smtp-port", str(smtp), "--http-port", str(http)],
            full,
            tmp / "sinks.log",
        )
        sink_url = f"http://127.0.0.1:{http}"

        def sink_up() -> bool:
            try:
                return httpx.get(f"{sink_url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        api = ServiceProcess("notifications", full, log_path=tmp / "api.log")
        stack = Stack(env=full, api=api, tmp=tmp, sink_url=sink_url, broker_url=url)
        stack.children.append(sinks)
        stacks.append(stack)  # registered first: stopped at the end even if a start fails
        wait_for(sink_up, 60)
        api.start(timeout=60)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    """The module's stack: API, sinks, sweeper and one worker pool on every channel."""
    s = stack_factory()
    s.start_worker(concurrency=2)
    s.start_sweeper()
    return s


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body  # type: ignore[no-any-return]
