"""Faults the foundation bounds: a request stuck on a dependency answers 503 within the
deadline, /readyz answers within a second, and a database that stops answering (a black-holed
forwarder in front of PostgreSQL) or holds a lock (SQLite) gives 503s, not hangs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.faults import Forwarder
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow
ADMIN = {"x-api-key": "test-admin-key"}


def test_a_stuck_request_gets_a_503_within_the_deadline(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("tests.common.slow_app", {"SLOW_APP_REQUEST_TIMEOUT": "1"}, "SLOW_APP")
    start = time.monotonic()
    resp = httpx.get(f"{svc.url}/hang", timeout=10)
    took = time.monotonic() - start
    assert resp.status_code == 503 and 1.0 <= took < 2.0, (resp.status_code, took)
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.headers["retry-after"] == "5" and resp.headers["x-request-id"]
    assert "within 1 s" in resp.json()["detail"]
    # The stuck work was cancelled, not left running.
    assert wait_for(lambda: httpx.get(f"{svc.url}/cancelled").json() == ["hang"], 5)
    # A response that has started streams past the deadline.
    with httpx.stream("GET", f"{svc.url}/stream", timeout=10) as streamed:
        events = [line for line in streamed.iter_lines() if line.startswith("data:")]
    assert streamed.status_code == 200 and len(events) == 6
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert 'route="/hang",service="slow_app",status="503"' in metrics


def test_readyz_answers_within_a_second_whatever_its_checks_do(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("tests.common.slow_app", {}, "SLOW_APP")
    start = time.monotonic()
    resp = httpx.get(f"{svc.url}/readyz", timeout=10)
    assert time.monotonic() - start < 1.0
    assert resp.status_code == 503
    assert resp.json()["dependencies"]["stuck"]["status"] == "down"


def _shortener_env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "URL_SHORTENER_REDIS_URL": redis_url,
        "URL_SHORTENER_DATABASE_URL": database_url,
        "URL_SHORTENER_DATA_DIR": str(tmp_path / "data"),
        "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        "URL_SHORTENER_REQUEST_TIMEOUT": "3",
        "URL_SHORTENER_SQL_TIMEOUT": "2",
        "URL_SHORTENER_ACCESS_LOG": "false",
    }


def test_a_database_that_stops_answering_gives_503s_not_hangs(
    redis_url: str,
    database_url: str,
    service_factory: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the network fault is PostgreSQL's; SQLite's lock is the next test")
    parsed = make_url(database_url)
    with Forwarder(parsed.port or 5432) as forwarder:
        through = parsed.set(host="127.0.0.1", port=forwarder.port)
        url = through.render_as_string(hide_password=False)
        svc = service_factory("url_shortener", _shortener_env(redis_url, url, tmp_path))
        assert httpx.get(f"{svc.url}/api/links", headers=ADMIN).status_code == 200
        forwarder.blackhole()
        for _ in range(3):  # the pooled connection, then new ones
            start = time.monotonic()
            resp = httpx.get(f"{svc.url}/api/links", headers=ADMIN, timeout=30)
            took = time.monotonic() - start
            assert resp.status_code == 503 and took < 3.8, (resp.status_code, took, resp.text)
            assert resp.headers["retry-after"]
        start = time.monotonic()
        ready = httpx.get(f"{svc.url}/readyz", timeout=30)
        assert time.monotonic() - start < 1.0
        assert ready.status_code == 503 and ready.json()["dependencies"]["sql"]["status"] == "down"
        forwarder.restore()
        wait_for(
            lambda: httpx.get(f"{svc.url}/api/links", headers=ADMIN, timeout=30).status_code == 200,
            30,
        )


def test_a_locked_sqlite_database_gives_503s_not_hangs(
    redis_url: str, service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    import sqlite3

    path = tmp_path / "locked.db"
    svc = service_factory("url_shortener", _shortener_env(redis_url, f"sqlite:///{path}", tmp_path))
    made = httpx.post(f"{svc.url}/api/links", json={"url": "https://example.com/"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    holder = sqlite3.connect(path, timeout=1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        resp = httpx.post(
            f"{svc.url}/api/links", json={"url": "https://example.com/b"}, headers=ADMIN, timeout=30
        )
        took = time.monotonic() - start
        assert resp.status_code == 503 and took < 3.8, (resp.status_code, took, resp.text)
        assert resp.headers["retry-after"]
    finally:
        holder.rollback()
        holder.close()
    again = httpx.post(f"{svc.url}/api/links", json={"url": "https://example.com/c"}, headers=ADMIN)
    assert again.status_code == 201
