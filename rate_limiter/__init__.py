"""Rate limiter: exact limits on Redis (one Lua script, one round trip) or in memory.

The library (`RateLimiter`, `Limit`, backends), the ASGI middleware (`RateLimitMiddleware`)
and the HTTP service (`python -m rate_limiter`) share one core.
"""

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.backends import (
    AsyncBackend,
    FailMode,
    FallbackBackend,
    MemoryBackend,
    PrefetchBackend,
    RedisBackend,
    SyncBackend,
    SyncRedisBackend,
)
from rate_limiter.errors import InvalidCost, RateLimited, RulesError
from rate_limiter.extractors import client_ip
from rate_limiter.limiter import RateLimiter, SyncRateLimiter
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.middleware import RateLimitMiddleware
from rate_limiter.route_rules import RouteRule

__all__ = [
    "Algorithm",
    "AsyncBackend",
    "Decision",
    "FailMode",
    "FallbackBackend",
    "InvalidCost",
    "Limit",
    "LimiterMetrics",
    "MemoryBackend",
    "PrefetchBackend",
    "RateLimitMiddleware",
    "RateLimited",
    "RateLimiter",
    "RedisBackend",
    "RouteRule",
    "RulesError",
    "SyncBackend",
    "SyncRateLimiter",
    "SyncRedisBackend",
    "client_ip",
]
