"""RQ's no-op for `make bench-task_queue`, in a module of its own: RQ imports it in every
work horse it forks, so it must stay as light as a user's own job module would be."""

from __future__ import annotations

import os

import redis

_client: redis.Redis | None = None


def rq_noop() -> None:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    _client.incr("bench:done")
