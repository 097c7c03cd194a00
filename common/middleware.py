"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path).

`ObservabilityMiddleware`: request id (taken from `X-Request-ID` or made), structlog context,
metrics by route template, one access-log line. `BodyLimitMiddleware`: refuses bodies over a
size with 413 before the app reads them.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException

from common.errors import problem_message, too_large_detail
from common.metrics import HttpMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = structlog.get_logger("access")


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


# A generator of its own (an app calling `random.seed(42)` must not make ids repeat), seeded
# from the OS now and again in every forked child (pre-forking servers, uvicorn workers).
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_request_id() -> str:
    """128 random bits in hex (the shape of a uuid4's `.hex`), rather than `uuid4()`, which
    asks the OS for 16 bytes on every request (a `getrandom` system call, ~2% of a trivial
    request's CPU on our VMs). A request id must be unique, not unguessable: nothing is
    authorised by it."""
    return f"{_ids.getrandbits(128):032x}"


class ObservabilityMiddleware:
    def __init__(
        self, app: ASGIApp, *, service: str, metrics: HttpMetrics, access_log: bool = True
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
                break
        request_id = request_id or new_request_id()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            method = scope.get("method", "WS")
            route = _route_template(scope)
            self.metrics.requests.labels(self.service, method, route, str(status)).inc()
            self.metrics.duration.labels(self.service, method, route).observe(elapsed)
            if self.access_log:
                access_log.info(
                    "request",
                    method=method,
                    path=scope.get("path"),
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")


class BodyLimitMiddleware:
    """413 problem+json for bodies over `max_bytes`, whether declared or streamed.

    The 413 closes the connection (`Connection: close`): otherwise the server would go on
    reading, and throwing away, the rest of a streamed body to reuse the connection, for as
    long as the client cares to send (a chunked body has no end it must declare)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self._body, self._headers = problem_message(
            413, too_large_detail(max_bytes), headers=[(b"connection", b"close")]
        )

    async def _reject(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": self._headers})
        await send({"type": "http.response.body", "body": self._body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    streamed = True
                    continue
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
            elif name == b"transfer-encoding":
                streamed = True
        if not streamed:
            # No body, or one of a declared length within the limit (the server delivers no
            # more than it declares): nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        over = replaced = started = False

        async def limited_receive() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _TooLarge()
            return message

        async def limited_send(message: Message) -> None:
            nonlocal started, replaced
            if over and not started:
                # However the app answers the exception raised from `receive` (FastAPI's
                # handlers make a response of their own), the client gets this one 413.
                started = replaced = True
                await self._reject(send)
                return
            if replaced:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, limited_send)
        except _TooLarge:
            if not started:
                await self._reject(send)


class _TooLarge(HTTPException):
    """Raised from `receive`; FastAPI re-raises HTTPExceptions met while reading a body."""

    def __init__(self) -> None:
        super().__init__(413, "The request body is too large.")
