"""Run an app with uvicorn: the one place server settings live, so every service (and every
benchmark baseline) is served the same way."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from common.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # the observability middleware writes the access log
        log_config=None,
        timeout_graceful_shutdown=10,
    )
