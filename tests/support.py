"""Helpers the tests share: a clock moved by hand, the migrations check, and (from
common/processes.py, which the benchmarks use too) real server processes on free ports, helper
processes, and waiting for conditions."""

from __future__ import annotations

from typing import Any

from common.processes import ROOT, ChildProcess, ServiceProcess, wait_for

__all__ = [
    "ROOT",
    "ChildProcess",
    "ManualClock",
    "ServiceProcess",
    "migrations_match_models",
    "wait_for",
]


class ManualClock:
    """A monotonic clock (seconds) that moves only when a test moves it: for code that takes
    a `clock` (a circuit breaker's reset, a prefetched batch's expiry). Never for Redis, whose
    own clock decides."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def migrations_match_models(url: str, package: str, metadata: Any) -> list[Any]:
    """Upgrade the (empty) database at `url` to head through `package`'s migrations and
    return what autogenerate still finds against `metadata`: [] when they agree."""
    import asyncio

    from common.db import create_engine
    from common.migrations import differences, upgrade

    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            await upgrade(engine, package)
            async with engine.connect() as conn:
                return await conn.run_sync(differences, metadata)
        finally:
            await engine.dispose()

    return asyncio.run(run())
