"""A Redis Cluster primary killed under real services: its replica takes its slots over and
the services go on, exactly, without a restart.

Each test makes its own three-primary cluster (the session's is shared by the tests that do
not kill nodes). What a failover can lose is what the primary had not yet passed on to its
replica (replication is asynchronous); the tests wait for the replicas to catch up before
the kill, so they show what is kept, and the service READMEs say what can be lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from common.redis_cluster_server import RedisClusterProcess
from tests.rate_limiter.factories import check_body, write_rules
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow

RULES = """\
domain: api
algorithm: gcra
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 40}
"""
ADMIN = {"x-api-key": "test-admin-key"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    # A primary silent for 2 s is failed over: quick, yet not tripped by a busy machine.
    with RedisClusterProcess(tmp_path / "cluster", node_timeout_ms=2000) as made:
        yield made


def _key_with(cluster: RedisClusterProcess, text: str) -> str:
    """The one Redis key whose name contains `text`, wherever it lives."""
    found = set()
    for node in cluster.nodes:
        with cluster.client(node) as c:
            found |= {k for k in c.keys(f"*{text}*")}
    assert len(found) == 1, found
    return str(found.pop())


def _redis_up(base: str) -> bool:
    try:
        body = httpx.get(f"{base}/readyz", timeout=2).json()
    except httpx.HTTPError:
        return False
    return bool(body["dependencies"]["redis"]["status"] == "up")


class Traffic:
    """Requests sent in a loop from a thread while the cluster fails over: every status."""

    def __init__(self, send: Callable[[httpx.Client, int], httpx.Response]) -> None:
        self.send = send
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                self.statuses.append(self.send(client, i).status_code)
                i += 1
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        wait_for(lambda: len(self.statuses) > 5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_the_limiter_stays_exact_across_a_failover(
    tmp_path: Path, cluster: RedisClusterProcess, service_factory: Callable[..., ServiceProcess]
) -> None:
    env = {
        "RATE_LIMITER_RULES": str(write_rules(tmp_path, RULES)),
        "RATE_LIMITER_REDIS_URL": cluster.url,
        "RATE_LIMITER_BACKEND_RETRY_INTERVAL": "0.2",
        "RATE_LIMITER_REDIS_TIMEOUT": "0.3",
        "RATE_LIMITER_GRPC_PORT": "0",
    }
    a, b = service_factory("rate_limiter", env), service_factory("rate_limiter", env)
    urls = (a.url, b.url)

    def check(base: str, user: str) -> dict:
        resp = httpx.post(f"{base}/api/check", json=check_body(("user", user)), timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    before = [check((a.url, b.url)[i % 2], "exact") for i in range(20)]
    assert all(r["allowed"] and not r["decisions"][0]["degraded"] for r in before)
    cluster.wait_replicated()
    key = _key_with(cluster, "exact")
    # A user whose key the same primary serves: once it is decided from Redis again, each
    # instance's client has the new slot map for "exact" too.
    probe = next(
        f"probe{i}"
        for i in range(500)
        if cluster.primary_for(key.replace("exact", f"probe{i}")) is cluster.primary_for(key)
    )

    def steady(client: httpx.Client, i: int) -> httpx.Response:
        base = (a.url, b.url)[i % 2]
        return client.post(f"{base}/api/check", json=check_body(("user", f"s{i % 50}")))

    with Traffic(steady) as traffic:
        victim = cluster.fail_over(key)
        assert cluster.primary_for(key) is not victim
        wait_for(lambda: _redis_up(a.url) and _redis_up(b.url), timeout=30)
        # Both decide from Redis again, not locally.
        wait_for(
            lambda: not any(check(u, probe)["decisions"][0]["degraded"] for u in urls), timeout=30
        )
    assert set(traffic.statuses) == {200}  # verdicts throughout, never an error

    after = [check((a.url, b.url)[i % 2], "exact") for i in range(40)]
    assert not any(r["decisions"][0]["degraded"] for r in after)
    assert sum(r["allowed"] for r in after) == 20  # the 20 taken before the kill were kept


def test_the_shortener_keeps_redirecting_and_counting_across_a_failover(
    tmp_path: Path,
    cluster: RedisClusterProcess,
    service_factory: Callable[..., ServiceProcess],
    database_url: str,
) -> None:
    env = {
        "URL_SHORTENER_REDIS_URL": cluster.url,
        "URL_SHORTENER_DATABASE_URL": database_url,
        "URL_SHORTENER_DATA_DIR": str(tmp_path / "data"),
        "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        "URL_SHORTENER_ACCESS_LOG": "false",
        "URL_SHORTENER_REDIS_RETRY_AFTER": "0.2",
        "URL_SHORTENER_LOCAL_CACHE_TTL_SECONDS": "0",  # every redirect asks Redis
    }
    a, b = service_factory("url_shortener", env), service_factory("url_shortener", env)
    urls = (a.url, b.url)

    def create(**fields: object) -> str:
        body = {"url": "https://example.com/", **fields}
        resp = httpx.post(f"{a.url}/api/links", json=body, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        return str(resp.json()["code"])

    def hit(base: str, code: str) -> int:
        return httpx.get(f"{base}/{code}", timeout=10).status_code

    limited = create(max_visits=30)
    # A link served by the same primary, redirected to throughout the failover.
    primary = cluster.primary_for(f"{{l:{limited}}}")
    plain = next(
        c for c in (create() for _ in range(60)) if cluster.primary_for(f"{{l:{c}}}") is primary
    )
    assert [hit((a.url, b.url)[i % 2], limited) for i in range(10)] == [302] * 10
    assert hit(b.url, plain) == 302
    cluster.wait_replicated()

    def redirect(client: httpx.Client, i: int) -> httpx.Response:
        return client.get(f"{(a.url, b.url)[i % 2]}/{plain}")

    with Traffic(redirect) as traffic:
        victim = cluster.fail_over(f"{{l:{limited}}}")
        wait_for(lambda: _redis_up(a.url) and _redis_up(b.url), timeout=30)
        metric = "url_shortener_redis_up 1.0"
        wait_for(lambda: all(metric in httpx.get(f"{u}/metrics").text for u in urls), timeout=30)
    assert set(traffic.statuses) == {302}  # redirected throughout (from SQL meanwhile)
    assert cluster.primary_for(f"{{l:{limited}}}") is not victim

    # Exactly 30 visits in all (claimed in SQL), the links on the dead primary's slots
    # served from its replica.
    rest = [hit((a.url, b.url)[i % 2], limited) for i in range(25)]
    assert rest == [302] * 20 + [410] * 5
    # Invalidations still reach every instance (the subscription moved on by itself).
    assert httpx.delete(f"{a.url}/api/links/{plain}", headers=ADMIN).status_code == 204
    wait_for(lambda: hit(b.url, plain) == 404, timeout=15)
