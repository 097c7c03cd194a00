"""`python -m rate_limiter` as real processes: two instances on one Redis, Redis restarts,
bad rules at start-up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from common.redis_server import RedisProcess
from tests.rate_limiter.factories import check_body, write_rules
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow

RULES = """\
domain: api
algorithm: gcra
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 40}
  - key: burst
    rate_limit: {unit: second, requests_per_unit: 50, burst: 10}
"""


def env(rules: Path, redis_url: str) -> dict[str, str]:
    return {
        "RATE_LIMITER_RULES": str(rules),
        "RATE_LIMITER_REDIS_URL": redis_url,
        "RATE_LIMITER_BACKEND_RETRY_INTERVAL": "0.2",
        "RATE_LIMITER_REDIS_TIMEOUT": "0.3",
        "RATE_LIMITER_LOG_FORMAT": "json",
        "RATE_LIMITER_GRPC_PORT": "0",
    }


def hammer(urls: list[str], body: dict, threads: int, per_thread: int) -> list[dict]:
    results: list[dict] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        with httpx.Client(base_url=urls[i % len(urls)], timeout=5) as c:
            got = [c.post("/api/check", json=body).json() for _ in range(per_thread)]
        with lock:
            results.extend(got)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def test_two_instances_admit_exactly_the_limit_together(
    tmp_path: Path, any_redis_url: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    rules = write_rules(tmp_path, RULES)
    a = service_factory("rate_limiter", env(rules, any_redis_url))
    b = service_factory("rate_limiter", env(rules, any_redis_url))
    results = hammer([a.url, b.url], check_body(("user", "u1")), threads=8, per_thread=15)
    assert len(results) == 120
    assert not any(d["degraded"] for r in results for d in r["decisions"])  # all from Redis
    assert sum(r["allowed"] for r in results) == 40
    # And with refill (50/s, burst 10): never more than the burst plus what refilled.
    start = time.monotonic()
    results = hammer([a.url, b.url], check_body(("burst", "b")), threads=8, per_thread=25)
    elapsed = time.monotonic() - start
    admitted = sum(r["allowed"] for r in results)
    assert 10 <= admitted <= 10 + int(elapsed * 50) + 1


def test_redis_stopped_and_restarted_mid_traffic(
    tmp_path: Path,
    redis_factory: Callable[..., RedisProcess],
    service_factory: Callable[..., ServiceProcess],
) -> None:
    server = redis_factory()
    rules = write_rules(tmp_path, RULES)
    svc = service_factory("rate_limiter", env(rules, server.url))
    stop = threading.Event()
    seen: list[tuple[int, bool]] = []

    def traffic() -> None:
        with httpx.Client(base_url=svc.url, timeout=5) as c:
            while not stop.is_set():
                resp = c.post("/api/check", json=check_body(("user", "steady")))
                degraded = any(d["degraded"] for d in resp.json()["decisions"])
                seen.append((resp.status_code, degraded))
                time.sleep(0.01)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: len(seen) > 5)
        server.stop()
        wait_for(lambda: any(d for _, d in seen), timeout=10)
        with httpx.Client(base_url=svc.url) as c:
            ready = c.get("/readyz").json()
            assert ready["status"] == "degraded"
            metrics = c.get("/metrics").text
        assert "rate_limiter_degraded 1.0" in metrics
        assert 'rate_limiter_backend_errors_total{backend="redis"}' in metrics
        server.start()
        mark = len(seen)
        wait_for(lambda: len(seen) > mark + 5 and not seen[-1][1], timeout=10)
    finally:
        stop.set()
        worker.join()
    assert all(code == 200 for code, _ in seen)  # never an error, only verdicts
    logs = svc.logs()
    assert "rate_limiter_backend_down" in logs and "rate_limiter_backend_recovered" in logs


def test_bad_rules_stop_the_service_with_the_line(
    tmp_path: Path, redis_url: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    rules = write_rules(tmp_path, "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {}\n")
    with pytest.raises(RuntimeError) as err:
        service_factory("rate_limiter", env(rules, redis_url))
    assert "rules.yaml:4: rate_limit needs 'unit'" in str(err.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int ten", "rules.yaml:4: requests_per_unit must be an integer, got 'ten'"),
        ("!!python/name:os.system 5", "rules.yaml:4: requests_per_unit: could not determine"),
    ],
)
def test_rules_the_yaml_library_rejects_stop_the_service_cleanly(
    tmp_path: Path,
    redis_url: str,
    service_factory: Callable[..., ServiceProcess],
    value: str,
    message: str,
) -> None:
    text = (
        "domain: api\ndescriptors:\n  - key: user\n"
        f"    rate_limit: {{unit: hour, requests_per_unit: {value}}}\n"
    )
    rules = write_rules(tmp_path, text)
    with pytest.raises(RuntimeError) as err:
        service_factory("rate_limiter", env(rules, redis_url))
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)
