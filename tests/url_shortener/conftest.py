"""Fixtures for the shortener: an app on real Redis + SQL, driven in-process over ASGI, or
real server processes for multi-instance and failure tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from tests.support import ServiceProcess
from url_shortener.app import create_app
from url_shortener.metrics import WriterMetrics
from url_shortener.settings import UrlShortenerSettings
from url_shortener.visits import visitor_salt
from url_shortener.writer import VisitWriter

ADMIN = {"x-api-key": "test-admin-key"}


@pytest.fixture
def settings(redis_url: str, database_url: str, tmp_path: Path) -> UrlShortenerSettings:
    return UrlShortenerSettings(
        redis_url=redis_url,
        database_url=database_url,
        data_dir=tmp_path,
        admin_key="test-admin-key",
        base_url="https://sho.rt",
        blocked_domains=["malware.test"],
        visit_flush_interval=0.1,
        create_rate_per_minute=100_000,
        log_level="WARNING",
        access_log=False,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
async def app(settings: UrlShortenerSettings) -> AsyncIterator[FastAPI]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
        yield c


async def make_link(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """Create a link through the API (the factory every test uses)."""
    body = {"url": "https://example.com/page", **fields}
    resp = await client.post("/api/links", json=body, headers=ADMIN)
    assert resp.status_code == 201, resp.text
    return resp.json()


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


def _process_env(redis_url: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "URL_SHORTENER_REDIS_URL": redis_url,
        "URL_SHORTENER_DATABASE_URL": database_url,
        "URL_SHORTENER_DATA_DIR": str(tmp_path / "data"),
        "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        "URL_SHORTENER_BASE_URL": "https://sho.rt",
        "URL_SHORTENER_ACCESS_LOG": "false",
        "URL_SHORTENER_LOG_FORMAT": "json",
        "URL_SHORTENER_CREATE_RATE_PER_MINUTE": "100000",
    }


@pytest.fixture
def shortener(
    database_url: str, tmp_path: Path, service_factory: Callable[..., ServiceProcess]
) -> Callable[..., ServiceProcess]:
    """Start a real `python -m url_shortener` on a free port, sharing one SQL database.
    (The database is set up first, so it is dropped only after the servers have stopped: a
    server still writing visits would deadlock PostgreSQL's DROP SCHEMA.)"""

    def start(redis_url: str, **env: str) -> ServiceProcess:
        base = _process_env(redis_url, database_url, tmp_path)
        return service_factory("url_shortener", {**base, **env})

    return start


@pytest.fixture
def visit_writer(tmp_path: Path, database_url: str) -> Iterator[Callable[..., ServiceProcess]]:
    """Start real `python -m url_shortener.writer` processes on the same Redis and SQL."""
    procs: list[ServiceProcess] = []

    def start(redis_url: str, **env: str) -> ServiceProcess:
        base = _process_env(redis_url, database_url, tmp_path)
        proc = ServiceProcess(
            "url_shortener.writer",
            {**base, "URL_SHORTENER_WRITER_CLAIM_IDLE_SECONDS": "1", **env},
            log_path=tmp_path / f"writer-{len(procs)}.log",
            env_prefix="URL_SHORTENER_WRITER",
        )
        procs.append(proc)
        return proc.start()

    yield start
    for proc in procs:
        proc.stop()


def in_process_writer(app: FastAPI, **kwargs: Any) -> VisitWriter:
    """A visit writer over the app's own Redis and SQL (what `python -m url_shortener.writer`
    runs), for tests that drive the app in-process."""
    settings: UrlShortenerSettings = app.state.settings
    links = app.state.links
    return VisitWriter(
        links.recorder.redis,
        links.sessions,
        stream=settings.visit_stream,
        salt=visitor_salt(settings),
        trusted_proxies=tuple(settings.trusted_proxies),
        batch_entries=kwargs.pop("batch_entries", 20),
        claim_idle=kwargs.pop("claim_idle", 30.0),
        metrics=WriterMetrics(CollectorRegistry()),
        **kwargs,
    )


async def settle_visits(app: FastAPI) -> int:
    """Ship the app's buffered visits to the stream and write them all to SQL, as a writer
    process would; returns how many visits were shipped."""
    shipped: int = await app.state.links.recorder.flush()
    await in_process_writer(app).drain()
    return shipped
