"""Run an app with uvicorn: the one place server settings live, so every service (and every
benchmark baseline) is served the same way."""

from __future__ import annotations

import gc

import uvicorn
from fastapi import FastAPI

from common.settings import ServiceSettings


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    # Everything built so far (modules, routes, schemas) lives as long as the process: move
    # it out of the garbage collector's reach, so a full collection no longer walks a few
    # hundred thousand objects in the middle of a request (a tail-latency spike of tens of
    # ms); the collector then only looks at objects made while serving. (What Instagram
    # did for its Django servers; see the README's "Performance".)
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # the observability middleware writes the access log
        log_config=None,
        timeout_graceful_shutdown=10,
    )
