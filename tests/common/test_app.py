"""The shared wiring through a real server's interface (ASGI over httpx)."""

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from common.app import build_app
from common.errors import DomainError
from common.health import HealthChecks
from common.settings import ServiceSettings


class ThingMissing(DomainError):
    title = "Thing not found"


class Thing(BaseModel):
    name: str
    size: int


def make_app(checks: HealthChecks | None = None) -> FastAPI:
    settings = ServiceSettings(service_name="demo", max_body_bytes=2048, log_format="json")
    app = build_app(
        settings,
        title="demo",
        registry=CollectorRegistry(),
        checks=checks or HealthChecks(),
        errors={ThingMissing: 404},
    )

    @app.post("/things")
    async def create(thing: Thing) -> Thing:
        return thing

    @app.get("/things/{name}")
    async def get(name: str) -> dict[str, str]:
        raise ThingMissing(f"no thing called {name}")

    @app.get("/db")
    async def db() -> None:
        from sqlalchemy import text

        from common.db import create_engine
        from common.redis_server import free_port

        engine = create_engine(f"postgresql://nobody@127.0.0.1:{free_port()}/none")
        try:
            async with engine.connect() as conn:  # nothing listens there: a real failure
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    return app


@pytest.fixture
async def client():  # type: ignore[no-untyped-def]
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def assert_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    return body


async def test_domain_error_is_mapped_once(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/things/x"), 404)
    assert body["title"] == "Thing not found"
    assert body["detail"] == "no thing called x"


async def test_validation_error_is_422_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.post("/things", json={"name": "a", "size": "big"}), 422)
    assert "size" in body["detail"]
    assert body["errors"][0]["loc"][-1] == "size"


async def test_malformed_json_is_400_problem(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/things", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert assert_problem(resp, 400)["title"] == "Malformed JSON"


async def test_huge_body_is_413_problem(client: httpx.AsyncClient) -> None:
    big = {"name": "x" * 5000, "size": 1}
    assert_problem(await client.post("/things", json=big), 413)


async def test_streamed_huge_body_is_413_problem(client: httpx.AsyncClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"x" * 1000

    resp = await client.post(
        "/things", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(resp, 413)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404)
    assert_problem(await client.delete("/things"), 405)


async def test_unexpected_error_is_500_problem_without_internals(
    client: httpx.AsyncClient,
) -> None:
    body = assert_problem(await client.get("/boom"), 500)
    assert "bug" not in body.get("detail", "")


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    resp = await client.get("/healthz", headers={"x-request-id": "abc123"})
    assert resp.headers["x-request-id"] == "abc123"
    resp = await client.get("/healthz")
    assert len(resp.headers["x-request-id"]) == 32


async def test_metrics_label_routes_by_template(client: httpx.AsyncClient) -> None:
    await client.get("/things/one")
    await client.get("/things/two")
    text = (await client.get("/metrics")).text
    assert (
        'http_requests_total{method="GET",route="/things/{name}",service="demo",status="404"} 2.0'
        in text
    )
    assert "/things/one" not in text
    assert "http_request_duration_seconds_bucket" in text


async def test_readyz_required_down_is_503_optional_down_is_degraded() -> None:
    async def ok() -> None:
        return None

    async def down() -> None:
        raise ConnectionError("refused")

    for required, status, overall in ((True, 503, "down"), (False, 200, "degraded")):
        checks = HealthChecks()
        checks.add("sql", ok)
        checks.add("redis", down, required=required)
        transport = httpx.ASGITransport(app=make_app(checks))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            resp = await c.get("/readyz")
        assert resp.status_code == status
        body = resp.json()
        assert body["status"] == overall
        assert body["dependencies"]["sql"]["status"] == "up"
        assert body["dependencies"]["redis"]["status"] == "down"
        assert "refused" in body["dependencies"]["redis"]["error"]


async def test_unreachable_database_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    resp = await client.get("/db")
    assert assert_problem(resp, 503)["detail"].startswith("The database is unavailable")
    assert resp.headers["retry-after"] == "5"


def test_request_ids_are_unique_across_forked_workers() -> None:
    """Ids come from a generator a forked child reseeds: uvicorn workers or a pre-forking
    server never hand out the parent's (or each other's) sequence; and an app seeding the
    `random` module changes nothing."""
    import os
    import random

    from common.middleware import new_request_id

    saved = random.getstate()
    random.seed(42)
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next ids, then leave without running pytest's teardown
            os.write(write_end, "".join(new_request_id() for _ in range(3)).encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        theirs = os.read(read_end, 1000).decode()
        os.close(read_end)
        ours = "".join(new_request_id() for _ in range(3))
        assert len(theirs) == len(ours) == 96
        assert int(ours, 16) >= 0 and int(theirs, 16) >= 0  # hex only
        assert {theirs[i : i + 32] for i in range(0, 96, 32)}.isdisjoint(
            {ours[i : i + 32] for i in range(0, 96, 32)}
        )
        assert len({ours[i : i + 32] for i in range(0, 96, 32)}) == 3
        random.seed(42)
        first = new_request_id()
        random.seed(42)
        assert new_request_id() != first  # the app's seed is not the ids' seed
    finally:
        random.setstate(saved)
