"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rate_limiter.config import RulesWatcher
from rate_limiter.service import RateLimitService
from rate_limiter.settings import RateLimiterSettings


async def _service(request: Request) -> RateLimitService:
    service: RateLimitService = request.app.state.service
    return service


async def _watcher(request: Request) -> RulesWatcher:
    watcher: RulesWatcher = request.app.state.rules
    return watcher


async def _settings(request: Request) -> RateLimiterSettings:
    settings: RateLimiterSettings = request.app.state.settings
    return settings


ServiceDep = Annotated[RateLimitService, Depends(_service)]
RulesDep = Annotated[RulesWatcher, Depends(_watcher)]
SettingsDep = Annotated[RateLimiterSettings, Depends(_settings)]
