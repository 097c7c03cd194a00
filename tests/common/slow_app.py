"""A service built with the suite's wiring whose routes hang or stream, served for real by
`python -m tests.common.slow_app` (SLOW_APP_PORT, SLOW_APP_REQUEST_TIMEOUT): the deadline
tests' subject."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry
from pydantic_settings import SettingsConfigDict

from common.app import build_app
from common.health import HealthChecks
from common.server import serve
from common.settings import ServiceSettings

CANCELLED: list[str] = []


class SlowSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SLOW_APP_")
    service_name: str = "slow_app"


def create_app(settings: SlowSettings) -> FastAPI:
    checks = HealthChecks()

    async def never() -> None:
        await asyncio.Event().wait()

    checks.add("stuck", never, required=True)
    app = build_app(settings, title="slow", registry=CollectorRegistry(), checks=checks)

    @app.get("/hang")
    async def hang() -> dict[str, str]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            CANCELLED.append("hang")
            raise
        return {}

    @app.get("/cancelled")
    async def cancelled() -> list[str]:
        return CANCELLED

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            for i in range(6):
                yield f"data: {i}\n\n".encode()
                await asyncio.sleep(0.5)

        return StreamingResponse(ticks(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    settings = SlowSettings()
    serve(create_app(settings), settings)
