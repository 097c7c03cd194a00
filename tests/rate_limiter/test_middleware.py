"""The ASGI middleware on a real FastAPI app, over a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import types
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from prometheus_client import CollectorRegistry

from common.redis import create_redis
from rate_limiter import (
    Algorithm,
    Decision,
    FallbackBackend,
    Limit,
    LimiterMetrics,
    MemoryBackend,
    RedisBackend,
)
from rate_limiter.extractors import RequestView, api_key, client_ip, route
from rate_limiter.middleware import RateLimitMiddleware, RouteRule


def make_app(
    redis_url: str, rules: list[RouteRule], *, redis_timeout: float = 0.5, **kwargs: Any
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(redis_url, timeout=redis_timeout)
        backend = RedisBackend(redis)
        app.state.rate_limit_backend = FallbackBackend(backend)
        yield
        await backend.aclose()
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/api/links")
    async def create() -> dict[str, str]:
        return {"code": "abc"}

    @app.get("/api/links/{code}")
    async def read(code: str) -> dict[str, str]:
        return {"code": code}

    @app.get("/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    app.add_middleware(RateLimitMiddleware, rules=rules, **kwargs)
    return app


@contextlib.asynccontextmanager
async def client(app: FastAPI, peer: str = "203.0.113.1") -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


CREATE = RouteRule(Limit.per_minute(3), method="POST", path="/api/links", name="links-create")


async def test_refuses_with_429_problem_and_sets_draft_headers(redis_url: str) -> None:
    async with client(make_app(redis_url, [CREATE])) as c:
        for i in range(3):
            resp = await c.post("/api/links")
            assert resp.status_code == 200 and resp.json() == {"code": "abc"}
            assert resp.headers["ratelimit-policy"] == '"links-create";q=3;w=60'
            assert resp.headers["ratelimit"].startswith(f'"links-create";r={2 - i};t=')
        resp = await c.post("/api/links")
        assert resp.status_code == 429
        assert resp.headers["content-type"] == "application/problem+json"
        body = resp.json()
        assert body["status"] == 429 and body["rule"] == "links-create"
        assert 1 <= int(resp.headers["retry-after"]) <= 20
        assert resp.headers["ratelimit"].startswith('"links-create";r=0;t=')
        # Unprotected routes are untouched, headers included.
        resp = await c.get("/open")
        assert resp.status_code == 200 and "ratelimit" not in resp.headers
        assert (await c.get("/api/links/x")).status_code == 200


async def test_a_get_rule_counts_head_requests_too(redis_url: str) -> None:
    # Starlette answers HEAD on a GET route by running the handler: HEAD must not be a way
    # around the GET route's limit.
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    calls = []

    async def plain(request: Request) -> PlainTextResponse:
        calls.append(request.method)
        return PlainTextResponse("ok")

    rule = RouteRule(Limit.per_minute(2), method="GET", path="/plain")
    app = make_app(redis_url, [rule])
    app.add_route("/plain", plain, methods=["GET"])  # a Starlette route: it answers HEAD
    async with client(app) as c:
        codes = [(await c.head("/plain")).status_code for _ in range(2)]
        codes += [(await c.get("/plain")).status_code, (await c.head("/plain")).status_code]
        assert codes == [200, 200, 429, 429]
        assert calls == ["HEAD", "HEAD"]
        assert rule.name == "GET /plain"


async def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(redis_url: str) -> None:
    app = make_app(redis_url, [CREATE], trusted_proxies=["10.0.0.0/8"])
    async with client(app, peer="203.0.113.1") as c:
        codes = [
            (await c.post("/api/links", headers={"x-forwarded-for": f"1.1.1.{i}"})).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
    # Behind a trusted proxy, each forwarded client has its own counter.
    async with client(app, peer="10.0.0.5") as c:
        for i in range(3):
            for _ in range(3):
                resp = await c.post("/api/links", headers={"x-forwarded-for": f"2.2.2.{i}"})
                assert resp.status_code == 200
        resp = await c.post("/api/links", headers={"x-forwarded-for": "2.2.2.0"})
        assert resp.status_code == 429


async def test_templates_api_keys_shadow_and_metrics(redis_url: str) -> None:
    metrics = LimiterMetrics(CollectorRegistry())
    rules = [
        RouteRule(Limit.per_hour(2), method="GET", path="/api/links/{code}", key=[api_key, route]),
        RouteRule(Limit.per_hour(1, algorithm=Algorithm.FIXED_WINDOW), path="/open", shadow=True),
    ]
    async with client(make_app(redis_url, rules, metrics=metrics)) as c:
        key = {"x-api-key": "k1"}
        assert [(await c.get("/api/links/a", headers=key)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert (await c.get("/api/links/b", headers=key)).status_code == 200  # another route
        assert (await c.get("/api/links/a")).status_code == 200  # no key: rule does not apply
        assert [(await c.get("/open")).status_code for _ in range(3)] == [200, 200, 200]
    assert metrics.shadow_refusals.labels("http", "* /open")._value.get() == 2
    assert metrics.decisions.labels("http", "GET /api/links/{code}", "refused")._value.get() == 1


async def test_concurrency_rule_holds_a_lease_for_the_request(redis_url: str) -> None:
    rule = RouteRule(Limit(1, 60, Algorithm.CONCURRENCY), path="/open", key=[client_ip])
    app = make_app(redis_url, [rule])
    async with client(app) as c:
        # Sequential requests each release their lease when done.
        assert [(await c.get("/open")).status_code for _ in range(3)] == [200, 200, 200]
        backend = app.state.rate_limit_backend
        held = await backend.acquire("mw:* /open|203.0.113.1", rule.limit)
        assert held.allowed
        assert (await c.get("/open")).status_code == 429
        await backend.release("mw:* /open|203.0.113.1", rule.limit, held.lease)
        assert (await c.get("/open")).status_code == 200


async def test_a_refused_request_uses_up_no_other_rules_quota(redis_url: str) -> None:
    """One client's refused requests leave the quota all clients share to the others."""
    metrics = LimiterMetrics(CollectorRegistry())
    shared = Limit.per_hour(5, algorithm=Algorithm.SLIDING_WINDOW)
    rules = [
        RouteRule(Limit.per_hour(2), method="POST", path="/api/links", name="per-client"),
        RouteRule(shared, method="POST", path="/api/links", key=[route], name="all-clients"),
    ]
    app = make_app(redis_url, rules, trusted_proxies=["203.0.113.0/24"], metrics=metrics)
    async with client(app) as c:

        async def post(ip: str) -> httpx.Response:
            return await c.post("/api/links", headers={"x-forwarded-for": ip})

        first = [await post("198.51.100.1") for _ in range(6)]
        assert [r.status_code for r in first] == [200, 200, 429, 429, 429, 429]
        assert first[-1].json()["rule"] == "per-client"
        assert '"all-clients";r=3;' in first[-1].headers["ratelimit"]  # (after the refund)
        assert [(await post("198.51.100.2")).status_code for _ in range(2)] == [200, 200]
        third = [await post("198.51.100.3") for _ in range(2)]
        assert [r.status_code for r in third] == [200, 429]
        assert third[1].json()["rule"] == "all-clients"
        assert '"per-client";r=1;' in third[1].headers["ratelimit"]
    assert metrics.refunds.labels("http", "all-clients")._value.get() == 4
    assert metrics.refunds.labels("http", "per-client")._value.get() == 1


class _BackendWithoutRefunds:
    """A backend written against the interface as it was before refunds."""

    name = "old"

    def __init__(self) -> None:
        self.inner = MemoryBackend()

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        return await self.inner.acquire(key, limit, cost)

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        return await self.inner.release(key, limit, lease)

    async def ping(self) -> None:
        return None


async def test_a_backend_without_refunds_still_refuses_cleanly(redis_url: str) -> None:
    rules = [
        RouteRule(Limit.per_hour(1), path="/open", name="tight"),
        RouteRule(Limit.per_hour(5), path="/open", key=[route], name="shared"),
    ]
    app = make_app(redis_url, rules, backend=_BackendWithoutRefunds())
    async with client(app) as c:
        assert [(await c.get("/open")).status_code for _ in range(3)] == [200, 429, 429]
        assert '"shared";r=1;' in (await c.get("/open")).headers["ratelimit"]  # (kept taken)


async def test_cost_above_capacity_never_fits(redis_url: str) -> None:
    rule = RouteRule(Limit.per_minute(2), path="/open", cost=lambda view: 5)
    async with client(make_app(redis_url, [rule])) as c:
        resp = await c.get("/open")
        assert resp.status_code == 429 and "retry-after" not in resp.headers
        assert "never fits" in resp.json()["detail"]


async def _ws_attempt(app: FastAPI, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming: list[MutableMapping[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> MutableMapping[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("203.0.113.1", 1),
             "app": app, "extensions": extensions, "query_string": b"", "root_path": "",
             "scheme": "ws", "server": ("t", 80), "subprotocols": []}  # fmt: skip
    await app(scope, receive, send)
    return sent


async def test_websocket_upgrades_are_limited_before_accept(redis_url: str) -> None:
    rule = RouteRule(Limit.per_minute(1), method="WS", path="/ws")
    app = make_app(redis_url, [rule])
    async with app.router.lifespan_context(app):
        first = await _ws_attempt(app, {})
        assert first[0]["type"] == "websocket.accept"
        # The handshake's response carries the draft headers, as an HTTP response does.
        accepted = dict(first[0]["headers"])
        assert accepted[b"ratelimit-policy"] == b'"WS /ws";q=1;w=60'
        assert accepted[b"ratelimit"].startswith(b'"WS /ws";r=0;t=')
        # Refused, with the denial-response extension: an HTTP 429 instead of the upgrade.
        denied = await _ws_attempt(app, {"websocket.http.response": {}})
        assert denied[0]["type"] == "websocket.http.response.start"
        assert denied[0]["status"] == 429
        assert (b"retry-after", denied[0]["headers"][-1][1]) == denied[0]["headers"][-1]
        # Without it: closed (policy violation) before accepting.
        closed = await _ws_attempt(app, {})
        assert closed == [{"type": "websocket.close", "code": 1008, "reason": "rate limited"}]


async def test_works_before_the_backend_exists_and_fails_open_on_errors(redis_url: str) -> None:
    # No lifespan has run: a process-local stand-in limits meanwhile.
    app = FastAPI()

    @app.post("/api/links")
    async def create() -> dict[str, str]:
        return {}

    app.add_middleware(RateLimitMiddleware, rules=[CREATE])
    transport = httpx.ASGITransport(app=app, client=("1.2.3.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert [(await c.post("/api/links")).status_code for _ in range(4)] == [200, 200, 200, 429]

    # A bare Redis backend on a dead Redis: fail open (the default), with a log and metric.
    dead = create_redis("redis://127.0.0.1:1/0", timeout=0.2)
    metrics = LimiterMetrics(CollectorRegistry())
    app2 = FastAPI()
    app2.post("/api/links")(create)
    app2.add_middleware(
        RateLimitMiddleware, rules=[CREATE], backend=RedisBackend(dead), metrics=metrics
    )
    transport = httpx.ASGITransport(app=app2, client=("1.2.3.4", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.post("/api/links")).status_code == 200
    assert metrics.backend_errors.labels("redis")._value.get() == 1
    await dead.aclose()


def header_cost(view: Any) -> Any:
    raw = view.headers.get("x-cost", "1")
    return float(raw) if "." in raw else int(raw)


async def test_a_cost_function_returning_nonsense_counts_as_one(redis_url: str) -> None:
    rule = RouteRule(Limit.per_hour(3), path="/open", cost=header_cost, name="costed")
    async with client(make_app(redis_url, [rule])) as c:
        # A negative cost would refill the bucket; a float is no cost at all: each counts 1.
        for cost in ("-5", "2.5", "-1"):
            resp = await c.get("/open", headers={"x-cost": cost})
            assert resp.status_code == 200
        assert (await c.get("/open", headers={"x-cost": "-100"})).status_code == 429
    with pytest.raises(ValueError, match="cost must be an integer"):
        RouteRule(Limit.per_hour(3), cost=-1)


async def test_requests_without_a_peer_address_share_one_limit(redis_url: str) -> None:
    rule = RouteRule(Limit.per_hour(2), path="/open", name="by-ip")
    app = make_app(redis_url, [rule])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=None)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            codes = [(await c.get("/open")).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            assert (await c.get("/open")).headers["ratelimit-policy"] == '"by-ip";q=2;w=3600'


async def test_a_request_waiting_for_its_decision_keeps_little_alive(redis_url: str) -> None:
    """While requests wait for Redis, the middleware's frame holds no closure cells, no
    request view and no list of rules: what waiting requests keep alive is what makes the
    cyclic GC run on a busy server (README, "Where wall-clock time goes")."""
    rule = RouteRule(Limit.per_second(1000), path="/open", name="waiting")
    # (a patient client: the requests are held on purpose, and a slow machine's GC scans
    # below must not outlast the connection's 0.5 s watchdog)
    app = make_app(redis_url, [rule], redis_timeout=30)
    admin = create_redis(redis_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("1.2.3.4", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/open")).status_code == 200  # connected, scripts loaded
            # Scripts wait while Redis is paused for writes: the requests are suspended
            # at the middleware, waiting for their decisions, as on a busy server.
            await admin.execute_command("CLIENT", "PAUSE", "5000", "WRITE")
            try:
                requests = [asyncio.create_task(c.get("/open")) for _ in range(8)]
                code = RateLimitMiddleware.__call__.__code__

                def waiting() -> list[Any]:
                    return [
                        o
                        for o in gc.get_objects()
                        if isinstance(o, types.CoroutineType)
                        and o.cr_code is code
                        and o.cr_await is not None
                    ]

                for _ in range(200):
                    if len(waiting()) == 8:
                        break
                    await asyncio.sleep(0.01)
                frames = waiting()
                assert len(frames) == 8
                held = [o for coro in frames for o in gc.get_referents(coro)]
                assert held, "the frames' locals are visible to the GC"
                assert rule in held  # (what the request still needs is there)
                assert not [o for o in held if isinstance(o, types.CellType | RequestView | list)]
                assert not [o for o in gc.get_objects() if isinstance(o, RequestView)]
            finally:
                await admin.execute_command("CLIENT", "UNPAUSE")
            codes = [r.status_code for r in await asyncio.gather(*requests)]
            assert codes == [200] * 8
    await admin.aclose()
