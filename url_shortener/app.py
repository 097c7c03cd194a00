"""create_app(settings): the FastAPI app; the lifespan opens and closes every connection."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from starlette.middleware import Middleware

from common.app import build_app
from common.db import create_engine, session_factory
from common.health import HealthChecks
from common.migrations import upgrade
from common.redis import REDIS_DOWN, create_redis
from rate_limiter import (
    FallbackBackend,
    Limit,
    LimiterMetrics,
    RateLimitMiddleware,
    RedisBackend,
    RouteRule,
    client_ip,
)
from url_shortener import store
from url_shortener.api import api, redirects
from url_shortener.cache import LinkCache, LocalCache
from url_shortener.errors import (
    AliasTaken,
    BadCursor,
    Forbidden,
    InvalidAlias,
    InvalidLink,
    InvalidTarget,
    LinkGone,
    LinkNotFound,
    NotProtected,
    Unauthorized,
)
from url_shortener.keys import KeyService
from url_shortener.metrics import ServerMetrics
from url_shortener.service import LinkService
from url_shortener.settings import UrlShortenerSettings
from url_shortener.visits import VisitRecorder, visitor_salt

log = structlog.get_logger("url_shortener")
MIGRATIONS = "url_shortener.migrations"

ERRORS = {
    LinkNotFound: 404,
    NotProtected: 405,
    LinkGone: 410,
    AliasTaken: 409,
    InvalidTarget: 422,
    InvalidAlias: 422,
    InvalidLink: 422,
    BadCursor: 422,
    Unauthorized: 401,
    Forbidden: 403,
}


def _rate_limits(settings: UrlShortenerSettings, metrics: LimiterMetrics) -> list[Middleware]:
    """Per client IP (rate_limiter's middleware, GCRA on Redis): link creation, and password
    attempts on protected links (each costs ~50 ms of scrypt; guessing must stay slow)."""
    rules = []
    if settings.create_rate_per_minute:
        creating = Limit.per_minute(settings.create_rate_per_minute)
        rules += [
            RouteRule(creating, method="POST", path=path, key=[client_ip], name=name)
            for path, name in (("/api/links", "links-create"), ("/api/links/bulk", "links-bulk"))
        ]
    if settings.unlock_rate_per_minute:
        unlocking = Limit.per_minute(settings.unlock_rate_per_minute)
        rules.append(
            RouteRule(unlocking, method="POST", path="/{code}", key=[client_ip], name="unlock")
        )
    if not rules:
        return []
    return [
        Middleware(
            RateLimitMiddleware,
            rules=rules,
            trusted_proxies=settings.trusted_proxies,
            metrics=metrics,
        )
    ]


PAGE = Path(__file__).parent / "page"
# Swagger UI 5 (it reads OpenAPI 3.1), as the fastapi-offline package ships it.
SWAGGER_UI = Path(importlib.util.find_spec("fastapi_offline").origin or "").parent / "static"  # type: ignore[union-attr]


def _add_pages(app: FastAPI) -> None:
    """The web page at / and the API docs at /docs, every asset served from this process
    (no CDN: both work offline). "assets" and "docs" are reserved aliases."""
    app.mount("/assets", StaticFiles(directory=PAGE), name="assets")
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )


def create_app(settings: UrlShortenerSettings) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("redis_url is required (python -m url_shortener starts one if unset)")
    redis_url = settings.redis_url
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    checks = HealthChecks()
    limiter_metrics = LimiterMetrics(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(
            settings.database_url or settings.sqlite_url("url_shortener"),
            timeout=settings.sql_timeout,
        )
        await upgrade(engine, MIGRATIONS)
        await store.check_database(engine)
        sessions = session_factory(engine)
        redis = create_redis(redis_url)
        metrics.redis_up.set(1)
        local = LocalCache(ttl=settings.local_cache_ttl_seconds, size=settings.local_cache_size)
        metrics.watch_local_cache(
            lambda: local.hits,
            lambda: local.misses,
            lambda: len(local),
            lambda: local.refreshes,
        )
        cache = LinkCache(
            redis,
            ttl=settings.cache_ttl_seconds,
            negative_ttl=settings.negative_cache_ttl_seconds,
            retry_after=settings.redis_retry_after,
            local=local,
            on_state=lambda up: metrics.redis_up.set(1 if up else 0),
        )
        recorder = VisitRecorder(
            redis,
            sessions,
            stream=settings.visit_stream,
            stream_maxlen=settings.visit_stream_maxlen,
            salt=visitor_salt(settings),
            trusted_proxies=tuple(settings.trusted_proxies),
            flush_interval=settings.visit_flush_interval,
            batch_size=settings.visit_batch_size,
            buffer_limit=settings.visit_buffer_limit,
            metrics=metrics.visits,
            redis_usable=lambda: settings.visits_via_stream and not cache.breaker.is_open,
        )
        links = LinkService(settings=settings, sessions=sessions, cache=cache, recorder=recorder)
        await links.start()
        limiter_backend = RedisBackend(redis)
        try:
            await limiter_backend.load()
        except REDIS_DOWN as exc:
            # Start anyway: redirects work from SQL, scripts load on first use (NOSCRIPT).
            log.error("redis_unavailable_at_startup", error=str(exc), fallback="sql")
        # Link creation is limited per client; without Redis, each instance limits locally.
        app.state.rate_limit_backend = FallbackBackend(limiter_backend, metrics=limiter_metrics)
        app.state.engine = engine
        app.state.links = links
        app.state.keys = KeyService(admin_key=settings.admin_key, sessions=sessions)

        async def sql_ok() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        checks.add("sql", sql_ok, required=True)
        # Redirects keep working from SQL without Redis: it is optional (degraded, not down).
        checks.add("redis", redis.ping, required=False)

        async def heal_loop() -> None:
            while True:
                await asyncio.sleep(max(settings.redis_retry_after, 0.1))
                await cache.heal()

        recorder.start()
        background = [
            asyncio.create_task(heal_loop(), name="redis-heal"),
            asyncio.create_task(links.keep_local_cache_fresh(), name="local-cache-refresh"),
            asyncio.create_task(cache.listen(), name="cache-invalidations"),
        ]
        try:
            yield
        finally:
            cache.stop_listening()
            background[0].cancel()
            background[1].cancel()
            await asyncio.wait(background)
            await recorder.stop()  # graceful shutdown: every buffered visit is shipped
            await limiter_backend.aclose()
            await redis.aclose()
            await engine.dispose()

    app = build_app(
        settings,
        middleware=_rate_limits(settings, limiter_metrics),
        title="URL shortener",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        errors=ERRORS,
        access_log=settings.access_log,
        docs_url=None,  # served below with local assets: /docs works offline
        redoc_url=None,
    )
    _add_pages(app)
    # The redirect routes go on the app's own route list, ahead of the API router: /{code}
    # matches a single path segment, so it cannot shadow /api/...; the single-segment routes
    # registered before it (/healthz, /metrics, /docs, ...) are reserved aliases. This way a
    # redirect is matched against ~10 routes instead of walking the API router, which
    # current FastAPI matches twice per request (README, "Performance").
    app.router.routes.extend(redirects.routes)
    app.include_router(api)
    return app
