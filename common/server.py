"""Run an app with uvicorn: the one place server settings live, so every service (and every
benchmark baseline) is served the same way.

Beyond uvicorn's defaults, a connection whose request headers have not all arrived within
`header_timeout` seconds (the setting, 10 by default) is closed, whether it sent part of a
request or nothing at all: uvicorn itself waits for them forever, so a few hundred idle
sockets would hold as many connections open for good (what slowloris does). Idle kept-alive
connections between requests are uvicorn's own `timeout_keep_alive` (5 s).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from common.settings import ServiceSettings


class _HeaderSweep:
    """One per server: every `timeout / 2` seconds it closes the connections that have been
    waiting for a request's headers for two sweeps or more. A connection then waits between
    `timeout` and 1.5 × `timeout`; in exchange a request costs two attribute writes rather than
    arming and cancelling a timer of its own."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop, timeout: float):
        self.tick = 0
        self.connections = state.connections
        self.loop = loop
        self.interval = timeout / 2
        loop.call_later(self.interval, self.sweep)

    def sweep(self) -> None:
        self.tick += 1
        conn: Any  # (WebSocket protocols are in the set too; they never await headers)
        for conn in list(self.connections):
            since = getattr(conn, "headers_awaited_since", None)
            if since is None or self.tick - since < 3:
                continue
            busy = conn.cycle is not None and not conn.cycle.response_complete
            if not busy and not conn.transport.is_closing():  # (a pipelined request's turn)
                conn.transport.close()
        self.loop.call_later(self.interval, self.sweep)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, marking when it starts waiting for a request's headers
    (on connecting, and at a request's first byte) and when they are complete."""

    header_timeout = 10.0
    headers_awaited_since: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        state: Any = self.server_state
        sweep = getattr(state, "header_sweep", None)
        if sweep is None:
            sweep = state.header_sweep = _HeaderSweep(state, self.loop, self.header_timeout)
        self._sweep: _HeaderSweep = sweep
        self.headers_awaited_since = sweep.tick

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.headers_awaited_since = self._sweep.tick

    def on_headers_complete(self) -> None:
        self.headers_awaited_since = None
        super().on_headers_complete()


def http_protocol(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class `serve` gives uvicorn: closes connections after `header_timeout`."""
    return type("HttpProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


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
        http=http_protocol(settings.header_timeout),
        access_log=False,  # the observability middleware writes the access log
        log_config=None,
        timeout_graceful_shutdown=10,
    )
