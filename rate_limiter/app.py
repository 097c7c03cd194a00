"""create_app(settings): the FastAPI app; the lifespan opens Redis and watches the rules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from common.app import build_app
from common.health import HealthChecks
from common.redis import REDIS_DOWN, create_redis
from rate_limiter.api import api
from rate_limiter.backends import (
    AsyncBackend,
    FallbackBackend,
    MemoryBackend,
    PrefetchBackend,
    RedisBackend,
)
from rate_limiter.envoy_grpc import EnvoyRateLimitServicer, start_grpc_server
from rate_limiter.errors import (
    BackendError,
    InvalidCost,
    InvalidRequest,
    RateLimited,
    RulesError,
)
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules_watcher import RulesWatcher
from rate_limiter.service import RateLimitService
from rate_limiter.settings import RateLimiterSettings

ERRORS = {
    InvalidCost: 422,
    InvalidRequest: 422,
    RulesError: 422,
    RateLimited: 429,
    BackendError: 502,
}
log = structlog.get_logger("rate_limiter.app")


def _unavailable(error: str) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        raise ConnectionError(error)

    return check


def create_app(settings: RateLimiterSettings) -> FastAPI:
    """The service; without `redis_url` it limits in this process only (memory backend)."""
    registry = CollectorRegistry()
    metrics = LimiterMetrics(registry)
    checks = HealthChecks()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = RulesWatcher(
            settings.rules,
            interval=settings.rules_reload_interval,
            merge_domains=settings.merge_domain_config,
        )
        redis = None
        primary: RedisBackend | None = None
        backend: AsyncBackend
        if settings.redis_url:
            redis = create_redis(settings.redis_url, timeout=settings.redis_timeout)
            primary = RedisBackend(redis)
            try:
                await primary.load()
            except REDIS_DOWN as exc:
                # Start anyway: the failure policy answers until Redis is back.
                log.error("redis_unreachable_at_start", error=str(exc))
            decider: AsyncBackend = primary
            if settings.prefetch != "off" and settings.prefetch_ttl > 0:
                decider = PrefetchBackend(
                    primary,
                    ttl=settings.prefetch_ttl,
                    share=settings.prefetch_share,
                    default=settings.prefetch == "all",
                    metrics=metrics,
                )
            backend = FallbackBackend(
                decider,
                mode=settings.on_backend_error,
                metrics=metrics,
                retry_interval=settings.backend_retry_interval,
            )
            checks.add("redis", redis.ping, required=False)
        else:
            backend = MemoryBackend()
        app.state.rules = watcher
        app.state.backend = backend
        app.state.service = RateLimitService(
            rules=lambda: watcher.current,
            backend=backend,
            metrics=metrics,
            near_limit_ratio=settings.near_limit_ratio,
            max_cost=settings.max_cost,
        )
        grpc_server = None
        if settings.grpc:
            servicer = EnvoyRateLimitServicer(
                app.state.service,
                response_headers=settings.limit_response_headers,
                dynamic_metadata=settings.response_dynamic_metadata,
            )
            try:
                grpc_server, app.state.grpc_port = await start_grpc_server(
                    servicer, host=settings.host, port=settings.grpc_port
                )
            except OSError as exc:
                # The HTTP API still answers; /readyz names the missing gRPC listener.
                log.error("grpc_unavailable", port=settings.grpc_port, error=str(exc))
                checks.add("grpc", _unavailable(str(exc)), required=False)
        watch = asyncio.create_task(watcher.watch())
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            if primary is not None:
                await primary.aclose()
            if redis is not None:
                await redis.aclose()

    app = build_app(
        settings,
        title="Rate limiter",
        lifespan=lifespan,
        registry=registry,
        checks=checks,
        errors=ERRORS,
        description="Envoy-ratelimit-style decisions over HTTP, exact on Redis.",
    )
    app.state.metrics = metrics
    app.include_router(api)
    return app
