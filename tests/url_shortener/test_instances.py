"""Real `python -m url_shortener` processes: several instances, shutdowns, crashes, Redis
outages. Slow-ish (each starts servers), still part of `make test`."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from common.redis_server import RedisProcess
from tests.support import ServiceProcess, wait_for
from tests.url_shortener.conftest import ADMIN

pytestmark = pytest.mark.slow
Start = Callable[..., ServiceProcess]


def create(base: str, **fields: object) -> dict:
    resp = httpx.post(
        f"{base}/api/links", json={"url": "https://example.com/", **fields}, headers=ADMIN
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def hit(base: str, code: str) -> int:
    return httpx.get(f"{base}/{code}", timeout=10).status_code


def visits(base: str, code: str) -> int:
    return httpx.get(f"{base}/api/links/{code}", headers=ADMIN).json()["visits"]


def test_invalidation_is_seen_by_every_instance_at_once(
    shortener: Start, any_redis_url: str
) -> None:
    a, b = shortener(any_redis_url), shortener(any_redis_url)
    code = create(a.url, url="https://example.com/v1")["code"]
    for inst in (a, b):
        assert httpx.get(f"{inst.url}/{code}").headers["location"] == "https://example.com/v1"
    httpx.patch(f"{b.url}/api/links/{code}", json={"url": "https://example.com/v2"}, headers=ADMIN)
    assert httpx.get(f"{a.url}/{code}").headers["location"] == "https://example.com/v2"
    httpx.delete(f"{b.url}/api/links/{code}", headers=ADMIN)
    assert hit(a.url, code) == 404


def test_max_visits_is_exact_across_two_instances(shortener: Start, any_redis_url: str) -> None:
    a, b = shortener(any_redis_url), shortener(any_redis_url)
    code = create(a.url, max_visits=30)["code"]
    targets = [a.url, b.url] * 60
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda base: hit(base, code), targets))
    assert statuses.count(302) == 30
    assert statuses.count(410) == 90


def test_codes_are_unique_across_instances_and_concurrent_requests(
    shortener: Start, any_redis_url: str
) -> None:
    a, b = shortener(any_redis_url), shortener(any_redis_url)
    with ThreadPoolExecutor(16) as pool:
        links = list(pool.map(lambda base: create(base), [a.url, b.url] * 100))
    assert len({link["code"] for link in links}) == 200


def test_graceful_shutdown_ships_every_buffered_visit(
    shortener: Start, visit_writer: Start, redis_url: str
) -> None:
    # A flush interval far longer than the test: only the shutdown drain can ship them.
    env = {"URL_SHORTENER_VISIT_FLUSH_INTERVAL": "300", "URL_SHORTENER_VISIT_BATCH_SIZE": "10000"}
    inst = shortener(redis_url, **env)
    visit_writer(redis_url)
    code = create(inst.url)["code"]
    for _ in range(137):
        assert hit(inst.url, code) == 302
    time.sleep(0.5)
    assert visits(inst.url, code) == 0  # still buffered in the server
    # uvicorn shuts down gracefully, then re-raises the signal: exit status -15.
    assert inst.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in inst.logs()
    again = shortener(redis_url)
    wait_for(lambda: visits(again.url, code) == 137, timeout=10)


def test_a_server_crash_loses_at_most_the_last_flush_interval(
    shortener: Start, visit_writer: Start, redis_url: str
) -> None:
    # README: "a server crash loses at most the visits of the last flush interval".
    inst = shortener(redis_url, URL_SHORTENER_VISIT_FLUSH_INTERVAL="0.3")
    visit_writer(redis_url)
    code = create(inst.url)["code"]
    for _ in range(50):
        hit(inst.url, code)
    time.sleep(1.0)  # > the flush interval: these 50 are in the stream (or in SQL) now
    for _ in range(20):
        hit(inst.url, code)
    inst.stop(signal.SIGKILL)
    again = shortener(redis_url)
    # Everything older than a flush interval gets to SQL; only the last 20 may be lost.
    wait_for(lambda: visits(again.url, code) >= 50, timeout=10)
    assert visits(again.url, code) <= 70


def test_run_all_starts_a_writer_beside_the_server(
    service_factory: Callable[..., ServiceProcess], redis_url: str, database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """`make run-url_shortener` (python -m url_shortener all): visits reach SQL with no
    other process started."""
    from tests.url_shortener.conftest import _process_env

    env = _process_env(redis_url, database_url, tmp_path)
    proc = ServiceProcess("url_shortener", env, log_path=tmp_path / "all.log", args=["all"])
    proc.start()
    try:
        code = create(proc.url)["code"]
        for _ in range(3):
            assert hit(proc.url, code) == 302
        wait_for(lambda: visits(proc.url, code) == 3, timeout=10)
        stats = httpx.get(f"{proc.url}/api/links/{code}/stats", headers=ADMIN).json()
        assert stats["total"] == 3
    finally:
        assert proc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "visit_writer_started" in proc.logs()


def test_redis_outage_redirects_from_sql_and_recovers(
    shortener: Start, redis_factory: Callable[..., RedisProcess]
) -> None:
    redis = redis_factory(appendonly=True)  # keeps its data across the restart below
    inst = shortener(redis.url, URL_SHORTENER_REDIS_RETRY_AFTER="0.2")
    plain = create(inst.url, url="https://example.com/plain")["code"]
    limited = create(inst.url, max_visits=4)["code"]
    doomed = create(inst.url)["code"]
    for code in (plain, doomed):
        assert hit(inst.url, code) == 302  # now cached in Redis
    assert [hit(inst.url, limited) for _ in range(2)] == [302, 302]
    assert httpx.get(f"{inst.url}/readyz").json()["dependencies"]["redis"]["status"] == "up"

    redis.stop()
    started = time.monotonic()
    assert httpx.get(f"{inst.url}/{plain}").headers["location"] == "https://example.com/plain"
    assert time.monotonic() - started < 2.0
    ready = httpx.get(f"{inst.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["dependencies"]["redis"]["status"] == "down"
    assert "url_shortener_redis_up 0.0" in httpx.get(f"{inst.url}/metrics").text
    # Exact limits without Redis: SQL takes the claims.
    assert [hit(inst.url, limited) for _ in range(3)] == [302, 302, 410]
    # Changes made during the outage must win over what Redis still holds afterwards.
    assert httpx.delete(f"{inst.url}/api/links/{doomed}", headers=ADMIN).status_code == 204
    assert hit(inst.url, doomed) == 404
    new = create(inst.url)["code"]  # creating works without Redis too
    assert hit(inst.url, new) == 302

    redis.start()  # same port, AOF restores the old cache entries
    wait_for(
        lambda: httpx.get(f"{inst.url}/readyz").json()["dependencies"]["redis"]["status"] == "up",
        timeout=10,
    )
    wait_for(lambda: "url_shortener_redis_up 1.0" in httpx.get(f"{inst.url}/metrics").text)
    assert hit(inst.url, doomed) == 404  # the queued invalidation was replayed
    assert hit(inst.url, limited) == 410  # the counter was rebuilt from SQL
    assert hit(inst.url, plain) == 302
    assert visits(inst.url, plain) >= 1


def test_starts_and_serves_from_sql_when_redis_is_down_at_startup(
    shortener: Start, redis_factory: Callable[..., RedisProcess]
) -> None:
    redis = redis_factory()
    redis.stop()  # nothing listens on its port now
    inst = shortener(redis.url, URL_SHORTENER_REDIS_RETRY_AFTER="0.2")
    assert httpx.get(f"{inst.url}/readyz").json()["status"] == "degraded"
    code = create(inst.url, url="https://example.com/cold", max_visits=2)["code"]
    assert [hit(inst.url, code) for _ in range(3)] == [302, 302, 410]
    redis.start()
    wait_for(lambda: httpx.get(f"{inst.url}/readyz").json()["status"] == "ok", timeout=10)
    assert hit(inst.url, code) == 410  # the Redis counter is rebuilt from SQL's count
    fresh = create(inst.url)["code"]
    assert hit(inst.url, fresh) == 302
