"""`build_app`: the wiring every service shares.

A service's own `create_app(settings)` calls this with its lifespan, routers and error
mapping; it gets logging, request ids, metrics at `/metrics`, tracing, `/healthz`, `/readyz`,
a body-size limit and problem+json errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.middleware import Middleware

from common.errors import DomainError, install_problem_handlers
from common.health import HealthChecks, health_router
from common.logging import configure_logging
from common.metrics import HttpMetrics
from common.middleware import BodyLimitMiddleware, ObservabilityMiddleware
from common.openapi import install_openapi
from common.settings import ServiceSettings
from common.tracing import setup_tracing

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


# Recent FastAPI releases have a native telemetry layer (the `telemetry` argument).
_NATIVE_TELEMETRY = "telemetry" in inspect.signature(FastAPI.__init__).parameters


def build_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Lifespan | None = None,
    registry: CollectorRegistry,
    checks: HealthChecks,
    errors: Mapping[type[DomainError], int] | None = None,
    access_log: bool = True,
    middleware: Sequence[Middleware] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """Build a FastAPI app with the suite's observability and error handling.

    `middleware` (the service's own, e.g. rate limiting) runs inside the common layers, so
    its responses still get request ids, metrics and the access log."""
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    if _NATIVE_TELEMETRY:
        # FastAPI's own OpenTelemetry layer would trace every request a second time beside
        # `setup_tracing`'s instrumentation as soon as a global provider is set (say by
        # `opentelemetry-instrument`), and even while it traces nothing it asks the global
        # providers (and the environment) on every request: a few % of a trivial request.
        fastapi_kwargs.setdefault("telemetry", {"tracing": False, "metrics": False, "logs": False})
    app = FastAPI(title=title, lifespan=lifespan, **fastapi_kwargs)
    app.state.settings = settings
    app.state.registry = registry
    app.state.checks = checks
    install_problem_handlers(app, errors)
    install_openapi(app)
    app.include_router(health_router(checks))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for layer in reversed(middleware):
        app.add_middleware(layer.cls, *layer.args, **layer.kwargs)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        ObservabilityMiddleware,
        service=settings.service_name,
        metrics=HttpMetrics(registry),
        access_log=access_log,
        deadline=settings.request_timeout or None,
    )
    app.state.tracer_provider = setup_tracing(
        app, service=settings.service_name, endpoint=settings.otel_exporter_otlp_endpoint
    )
    return app
