"""The framework's own ceiling: the suite's app wiring (common.build_app, same middleware,
same logging) with one trivial route that returns a fixed redirect, served by common.server
exactly like a service. Run: python -m benchmarks.baseline (env: BASELINE_PORT)."""

from __future__ import annotations

import os

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry

from common.app import build_app
from common.health import HealthChecks
from common.server import serve
from common.settings import ServiceSettings


def create_baseline_app(settings: ServiceSettings) -> FastAPI:
    app = build_app(
        settings,
        title="baseline",
        registry=CollectorRegistry(),
        checks=HealthChecks(),
        access_log=getattr(settings, "access_log", True),
    )

    @app.get("/{code}")
    async def fixed_redirect(code: str) -> Response:
        return Response(
            status_code=302,
            headers={"location": "https://example.com/", "cache-control": "private, no-store"},
        )

    return app


def main() -> None:
    from url_shortener.settings import UrlShortenerSettings

    # The shortener's settings class, so logging and server options are identical.
    settings = UrlShortenerSettings(port=int(os.environ["BASELINE_PORT"]))
    serve(create_baseline_app(settings), settings)


if __name__ == "__main__":
    main()
