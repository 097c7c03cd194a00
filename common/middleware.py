"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path).

`ObservabilityMiddleware`: request id (taken from `X-Request-ID` or made), structlog context,
metrics by route template, one access-log line. `BodyLimitMiddleware`: refuses bodies over a
size with 413 before the app reads them.
"""

from __future__ import annotations

import asyncio
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


class _Exchange:
    """One HTTP request in flight: its `send` (wrapped: the status is noted and the request id
    added), when it started, and whether the deadline already answered for it."""

    __slots__ = ("request_id", "send", "started", "status", "task", "timed_out")

    def __init__(self, send: Send, request_id: str, started: float) -> None:
        self.send = send
        self.request_id = request_id
        self.started = started
        self.status = 0  # 0: no response yet
        self.task: asyncio.Task[Any] | None = None
        self.timed_out = False

    async def __call__(self, message: Message) -> None:
        if self.timed_out:
            return  # the deadline answered already; the app's late reply goes nowhere
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [
                *message.get("headers", ()),
                (b"x-request-id", self.request_id.encode("latin-1")),
            ]
        await self.send(message)


class ObservabilityMiddleware:
    """Request ids, metrics, the access log, and a deadline: a request that has not started
    its response within `deadline` seconds (a database that stopped answering, say) gets a
    503 problem+json with `Retry-After` and its work is cancelled.

    The deadline costs no timer per request: one sweep per app, every `deadline / 10`
    seconds while requests are in flight, answers those past it. A streamed response (Server-
    Sent Events) is past the deadline's reach once it has started; WebSockets are not timed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        metrics: HttpMetrics,
        access_log: bool = True,
        deadline: float | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.access_log = access_log
        self.deadline = deadline
        self._inflight: dict[int, _Exchange] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._answering: set[asyncio.Task[None]] = set()

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
        start = time.perf_counter()
        exchange = _Exchange(send, request_id, start)
        timed = self.deadline is not None and scope["type"] == "http"
        if timed:
            exchange.task = asyncio.current_task()
            self._inflight[id(exchange)] = exchange
            if self._sweep is None:
                self._schedule_sweep()
        try:
            await self.app(scope, receive, exchange)
        except asyncio.CancelledError:
            if not exchange.timed_out:
                raise
            # Cancelled by the deadline, which has answered: end normally.
            if exchange.task is not None:
                exchange.task.uncancel()
        finally:
            if timed:
                del self._inflight[id(exchange)]
            status = 503 if exchange.timed_out else (exchange.status or 500)
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

    def _schedule_sweep(self) -> None:
        assert self.deadline is not None
        loop = asyncio.get_running_loop()
        self._sweep = loop.call_later(max(self.deadline / 10, 0.05), self._expire)

    def _expire(self) -> None:
        """Answer every request past the deadline that has no response yet."""
        self._sweep = None
        assert self.deadline is not None
        cutoff = time.perf_counter() - self.deadline
        for exchange in list(self._inflight.values()):
            if exchange.started <= cutoff and not exchange.status and not exchange.timed_out:
                exchange.timed_out = True
                answer = asyncio.ensure_future(self._answer(exchange))
                self._answering.add(answer)
                answer.add_done_callback(self._answering.discard)
        if self._inflight:
            self._schedule_sweep()

    async def _answer(self, exchange: _Exchange) -> None:
        assert self.deadline is not None
        seconds = f"{self.deadline:g}"
        body, headers = problem_message(
            503,
            f"The request did not complete within {seconds} s: a dependency is not "
            "answering. Try again shortly.",
            title="Service Unavailable",
            headers=[
                (b"retry-after", b"5"),
                (b"x-request-id", exchange.request_id.encode("latin-1")),
            ],
        )
        try:
            await exchange.send({"type": "http.response.start", "status": 503, "headers": headers})
            await exchange.send({"type": "http.response.body", "body": body})
        except OSError:
            pass  # the client left meanwhile
        finally:
            if exchange.task is not None:
                exchange.task.cancel()


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
