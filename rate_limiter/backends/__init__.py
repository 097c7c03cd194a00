"""Where limiter state lives, separate from the algorithms (as in alisaifee/limits).

- `RedisBackend` / `SyncRedisBackend`: one Lua script per decision, one round trip, Redis time.
- `MemoryBackend`: process-local, for single-process use and as the degraded fallback.
- `FallbackBackend`: Redis first; when it is unreachable, the policy decides (local limiter,
  fail open or fail closed) until it answers again.
"""

from rate_limiter.backends.base import AsyncBackend, SyncBackend, new_lease, state_key
from rate_limiter.backends.fallback import FailMode, FallbackBackend
from rate_limiter.backends.memory import MemoryBackend
from rate_limiter.backends.redis import RedisBackend, SyncRedisBackend

__all__ = [
    "AsyncBackend",
    "FailMode",
    "FallbackBackend",
    "MemoryBackend",
    "RedisBackend",
    "SyncBackend",
    "SyncRedisBackend",
    "new_lease",
    "state_key",
]
