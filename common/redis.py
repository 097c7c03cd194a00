"""Redis client factory (one server or a Redis Cluster) and Lua script loading.

`create_redis(url)` takes:
- `redis://`, `rediss://`, `unix://`: one server (redis-py's asyncio `Redis`);
- `redis+cluster://host:port[,host:port...]` (`rediss+cluster://` for TLS): a Redis Cluster
  (redis-py's asyncio `RedisCluster`). Every listed node is a startup node: any one that
  answers gives the client the slot map. `cluster=True` (a service's `<PREFIX>_REDIS_CLUSTER`
  switch) treats a plain `redis://` URL the same way.

Both speak the same commands; the code that uses them keeps a script's keys in one slot with
hash tags (`{l:abc}`), and never sends a multi-key command across slots.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Either client: what services hold and pass around.
AnyRedis = Redis | RedisCluster

# What "Redis is unavailable" looks like to callers that degrade instead of failing. On a
# cluster also: a slot without a primary (a failover under way), a node that asks to try
# again (a slot migrating), and no node answering at all.
REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
    ConnectionError,
    TimeoutError,
    OSError,
)

# A cluster URL's scheme, and the single-server scheme its nodes are reached by.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def cluster_url(url: str) -> str:
    """`redis://...` as `redis+cluster://...` (the `<PREFIX>_REDIS_CLUSTER` switch)."""
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        return url
    if scheme not in ("redis", "rediss"):
        raise ValueError(
            f"a Redis Cluster is reached over TCP (redis:// or rediss://), not {scheme}://"
        )
    return f"{scheme}+cluster{sep}{rest}"


def create_redis(
    url: str, *, timeout: float = 0.5, max_connections: int = 200, cluster: bool = False
) -> Redis:
    """An asyncio client with short timeouts, so a dead Redis fails fast, not slowly: one
    server, or a Redis Cluster for a `redis+cluster://` URL (or `cluster=True`).

    Typed as `Redis` either way, so services are written once: `RedisCluster` takes the
    same commands, except what a cluster refuses (multi-key commands across slots,
    transactions, PUBLISH inside a pipeline). Code that runs on a cluster stays within that
    and proves it in the cluster run (`any_redis_url`); code that must tell them apart
    checks `isinstance(client, RedisCluster)` or takes `AnyRedis`."""
    retry = Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1)
    if cluster or is_cluster_url(url):
        client = _create_cluster(cluster_url(url), timeout=timeout, max_connections=max_connections)
        return cast(Redis, client)
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        max_connections=max_connections,
        retry=retry,
        retry_on_error=[RedisConnectionError],
    )


def _create_cluster(url: str, *, timeout: float, max_connections: int) -> RedisCluster:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    first, *others = [h.strip() for h in hosts.split(",") if h.strip()]
    netloc = f"{userinfo}@{first}" if userinfo else first
    single = urlunsplit((CLUSTER_SCHEMES[parts.scheme], netloc, parts.path, parts.query, ""))
    nodes = []
    for host_port in others:
        host, _, port = host_port.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]"), int(port or 6379)))
    return RedisCluster.from_url(
        single,
        startup_nodes=nodes or None,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=15,
        max_connections=max_connections,  # (per node)
        # Fail fast here too: a failover takes the node timeout plus an election (1-2 s
        # here), and the services degrade on their own meanwhile (retrying across it held
        # requests for 2.2 s instead of 0.5 s in tests/cluster/test_failover.py).
        retry=Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=1),
    )


def load_script(redis: AnyRedis, path: Path) -> AsyncScript:
    """Register a Lua script file; redis-py runs it with EVALSHA and reloads it on NOSCRIPT."""
    return redis.register_script(path.read_text())
