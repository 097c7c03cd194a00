"""Test data and app builders shared by the rate limiter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from redis.asyncio import Redis

from rate_limiter.app import create_app
from rate_limiter.settings import RateLimiterSettings

RULES = """\
domain: api
apply_limits: every_level
algorithm: gcra
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
    descriptors:
      - key: action
        value: upload
        rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_log}
  - key: ip
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: fixed_window}
  - key: job
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: concurrency}
  - key: vip
    rate_limit: {unlimited: true}
"""


def write_rules(folder: Path, text: str = RULES, name: str = "rules.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def settings(rules: Path, redis_url: str | None, **extra: Any) -> RateLimiterSettings:
    return RateLimiterSettings(
        rules=rules,
        redis_url=redis_url,
        log_format="json",
        rules_reload_interval=0.05,
        backend_retry_interval=0.2,
        **{"grpc_port": 0, **extra},
    )


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run, behind an httpx client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


def client_for(rules: Path, redis_url: str | None, **extra: Any) -> Any:
    return running(create_app(settings(rules, redis_url, **extra)))


async def script_calls(redis: Redis) -> int:
    """Scripts Redis has run (EVALSHA calls), by its own accounting (`INFO commandstats`)."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def check_body(*entries: tuple[str, str], cost: int = 1, domain: str = "api") -> dict[str, Any]:
    return {
        "domain": domain,
        "descriptors": [{"key": k, "value": v} for k, v in entries],
        "cost": cost,
    }
