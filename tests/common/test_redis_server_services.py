"""The shared local Redis under real services started as `make run-*` starts them (no
`REDIS_URL`): restarted in any order they find the same server, and when the server itself
is stopped and started again they recover by themselves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from common.redis_server import shared_redis_url, stop_shared_redis
from tests.rate_limiter.factories import check_body, write_rules
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow

RULES = """\
domain: api
algorithm: gcra
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
"""
ADMIN = {"x-api-key": "test-admin-key"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    yield folder
    stop_shared_redis(folder)  # the services started it; the test owns it


def _redis_state(base: str) -> str:
    try:
        return str(httpx.get(f"{base}/readyz", timeout=2).json()["dependencies"]["redis"]["status"])
    except httpx.HTTPError:
        return "unreachable"


def _wait_redis_state(services: list[ServiceProcess], state: str) -> None:
    wait_for(lambda: all(_redis_state(s.url) == state for s in services), timeout=30)


def _check(base: str, user: str) -> dict:
    resp = httpx.post(f"{base}/api/check", json=check_body(("user", user)), timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_services_restarted_in_any_order_share_one_redis_and_survive_its_restart(
    tmp_path: Path, data_dir: Path, service_factory: Callable[..., ServiceProcess]
) -> None:
    # An empty URL wins over any REDIS_URL in the environment: each starts the shared one.
    limiter_env = {
        "RATE_LIMITER_REDIS_URL": "",
        "RATE_LIMITER_DATA_DIR": str(data_dir),
        "RATE_LIMITER_RULES": str(write_rules(tmp_path, RULES)),
        "RATE_LIMITER_BACKEND_RETRY_INTERVAL": "0.2",
        "RATE_LIMITER_GRPC_PORT": "0",  # (no fixed port in tests)
    }
    shortener_env = {
        "URL_SHORTENER_REDIS_URL": "",
        "URL_SHORTENER_DATA_DIR": str(data_dir),
        "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        "URL_SHORTENER_ACCESS_LOG": "false",
        "URL_SHORTENER_REDIS_RETRY_AFTER": "0.2",
    }
    limiter = service_factory("rate_limiter", limiter_env)
    url = shared_redis_url(data_dir)
    assert url is not None
    shortener = service_factory("url_shortener", shortener_env)
    assert shared_redis_url(data_dir) == url
    created = httpx.post(
        f"{shortener.url}/api/links", json={"url": "https://example.com/"}, headers=ADMIN
    )
    code = created.json()["code"]

    # The shortener restarts while the limiter keeps serving, exactly, from Redis.
    shortener.stop()
    assert [_check(limiter.url, "a")["allowed"] for _ in range(6)] == [True] * 5 + [False]
    shortener.start()
    assert shared_redis_url(data_dir) == url
    _wait_redis_state([limiter, shortener], "up")
    assert httpx.get(f"{shortener.url}/{code}").status_code == 302  # fills the Redis cache
    with redis.Redis.from_url(url) as r:  # one server holds both services' keys
        assert r.exists(f"{{l:{code}}}") and any(b"a" in k for k in r.keys("*user*"))

    # Then the limiter restarts while the shortener keeps serving.
    limiter.stop()
    assert httpx.get(f"{shortener.url}/{code}").status_code == 302
    limiter.start()
    assert _check(limiter.url, "a")["allowed"] is False  # the same counters: the same Redis

    # The server itself goes away (`make stop-redis`) and comes back (`make start-redis`).
    assert stop_shared_redis(data_dir)
    _wait_redis_state([limiter, shortener], "down")
    assert httpx.get(f"{shortener.url}/{code}").status_code == 302  # from SQL
    decided = _check(limiter.url, "b")
    assert decided["decisions"][0]["degraded"]  # decided locally meanwhile
    service_factory("rate_limiter", limiter_env).stop()  # any `make run-*` brings it back
    assert shared_redis_url(data_dir) == url
    _wait_redis_state([limiter, shortener], "up")
    # Recovered by themselves: exact decisions from Redis again, counters kept (AOF).
    wait_for(lambda: not _check(limiter.url, "c")["decisions"][0]["degraded"], timeout=30)
    assert _check(limiter.url, "a")["allowed"] is False
    metric = "url_shortener_redis_up 1.0"
    wait_for(lambda: metric in httpx.get(f"{shortener.url}/metrics").text, timeout=30)
    assert httpx.get(f"{shortener.url}/{code}").status_code == 302
