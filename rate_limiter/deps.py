"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from common.deps import from_state
from rate_limiter.rules_watcher import RulesWatcher
from rate_limiter.service import RateLimitService

ServiceDep = Annotated[RateLimitService, Depends(from_state("service"))]
RulesDep = Annotated[RulesWatcher, Depends(from_state("rules"))]
