"""Where limiter state lives, separate from the algorithms (as in alisaifee/limits).

- `RedisBackend` / `SyncRedisBackend`: one Lua script per decision, one round trip, Redis time.
- `MemoryBackend`: process-local, for single-process use and as the degraded fallback.
- `FallbackBackend`: Redis first; when it is unreachable, the policy decides (local limiter,
  fail open or fail closed) until it answers again.
- `PrefetchBackend` (opt-in): a busy GCRA key's tokens taken from Redis in batches and spent
  in the process; the bound shifts by its `ttl` (see its module).
"""

from rate_limiter.backends.base import AsyncBackend, SyncBackend, new_lease, state_key
from rate_limiter.backends.fallback import FailMode, FallbackBackend
from rate_limiter.backends.memory import MemoryBackend
from rate_limiter.backends.prefetch import PrefetchBackend
from rate_limiter.backends.redis import RedisBackend, SyncRedisBackend

__all__ = [
    "AsyncBackend",
    "FailMode",
    "FallbackBackend",
    "MemoryBackend",
    "PrefetchBackend",
    "RedisBackend",
    "SyncBackend",
    "SyncRedisBackend",
    "new_lease",
    "state_key",
]
