"""`/healthz` (the process is alive) and `/readyz` (its dependencies answer).

A check is an async callable that returns normally when the dependency is fine and raises
otherwise. A *required* dependency that is down makes `/readyz` answer 503; an *optional* one
(a cache the service can live without) makes it answer 200 with `"status": "degraded"`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

Check = Callable[[], Awaitable[Any]]


@dataclass
class HealthChecks:
    # Every check together answers within this (so /readyz answers within a second, whatever
    # its dependencies do): a check still running then is reported down and left to finish
    # on its own (a driver's clean-up after a cancel can take seconds; nobody waits for it).
    timeout: float = 0.8
    checks: dict[str, tuple[Check, bool]] = field(default_factory=dict)
    _stragglers: set[asyncio.Task[Any]] = field(default_factory=set)

    def add(self, name: str, check: Check, *, required: bool = True) -> None:
        self.checks[name] = (check, required)

    async def _run(self, check: Check) -> dict[str, Any]:
        start = time.perf_counter()
        task = asyncio.ensure_future(check())
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            task.cancel()
            self._stragglers.add(task)
            task.add_done_callback(self._forget)
            return {"status": "down", "error": f"no answer within {self.timeout:g} s"}
        exc = task.exception()
        if exc is not None:
            return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:200]}
        return {"status": "up", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" warning

    async def report(self) -> tuple[int, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._run(self.checks[n][0]) for n in names))
        deps = {}
        status, code = "ok", 200
        for name, result in zip(names, results, strict=True):
            required = self.checks[name][1]
            deps[name] = {**result, "required": required}
            if result["status"] == "down":
                if required:
                    status, code = "down", 503
                elif status == "ok":
                    status = "degraded"
        return code, {"status": status, "dependencies": deps}


def health_router(checks: HealthChecks) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        responses={
            503: {
                "description": "A required dependency is down (the same body names which).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        code, body = await checks.report()
        return JSONResponse(body, status_code=code)

    return router
