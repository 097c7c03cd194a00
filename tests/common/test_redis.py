"""`common.redis.create_redis` on one server and on a real Redis Cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis, RedisCluster

from common.redis import cluster_url, create_redis, is_cluster_url, load_script
from common.redis_cluster_server import RedisClusterProcess

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def test_cluster_urls_are_told_apart() -> None:
    assert is_cluster_url("redis+cluster://a:1,b:2") and is_cluster_url("rediss+cluster://a:1")
    assert not is_cluster_url("redis://a:1/0")
    assert cluster_url("rediss://u:p@a:1/0") == "rediss+cluster://u:p@a:1/0"
    with pytest.raises(ValueError, match="over TCP"):
        cluster_url("unix:///tmp/redis.sock")


async def test_a_plain_url_gives_one_server(redis_url: str) -> None:
    client = create_redis(redis_url)
    assert isinstance(client, Redis)
    assert await client.ping()
    await client.aclose()


async def test_a_cluster_url_gives_the_cluster_client_and_every_slot_works(
    redis_cluster_url: str, tmp_path: Path
) -> None:
    client = create_redis(redis_cluster_url)
    assert isinstance(client, RedisCluster)
    try:
        # Keys spread over every primary; a script's keys share a slot by their hash tag.
        keys = [f"{{k{i}}}" for i in range(30)]
        for key in keys:
            await client.set(key, 1)
        assert [await client.get(k) for k in keys] == [b"1"] * 30
        nodes = {getattr(client.get_node_from_key(k), "port", None) for k in keys}
        assert len(nodes) == 3
        (tmp_path / "incr.lua").write_text(SCRIPT)
        script = load_script(client, tmp_path / "incr.lua")
        assert await script(keys=["{k1}"], args=[5]) == 6
        # A primary that lost its scripts (as after a restart) gets them again.
        await client.script_flush()
        assert await script(keys=["{k1}"], args=[1]) == 7
    finally:
        await client.aclose()


async def test_the_switch_makes_a_plain_node_url_a_cluster(
    redis_cluster: RedisClusterProcess, redis_cluster_url: str
) -> None:
    one_node = f"redis://127.0.0.1:{redis_cluster.nodes[1].port}/0"
    client = create_redis(one_node, cluster=True)
    assert isinstance(client, RedisCluster)
    try:
        for i in range(10):
            await client.set(f"{{s{i}}}", i)  # every slot found from one startup node
        assert await client.get("{s9}") == b"9"
    finally:
        await client.aclose()


async def test_pub_sub_reaches_subscribers_on_other_nodes(redis_cluster_url: str) -> None:
    client = create_redis(redis_cluster_url)
    try:
        pubsub = client.pubsub()
        await pubsub.subscribe("links:invalidate")
        await client.publish("links:invalidate", "abc")
        message = None
        for _ in range(50):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message:
                break
            await asyncio.sleep(0.01)
        assert message is not None and message["data"] == b"abc"
        await pubsub.aclose()
    finally:
        await client.aclose()


async def test_a_dead_startup_node_is_skipped(tmp_path: Path) -> None:
    with RedisClusterProcess(tmp_path, primaries=3, replicas=1) as cluster:
        replica = cluster.nodes[3]
        replica.kill()
        others = [n for n in cluster.nodes if n is not replica]
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in [replica, *others])
        client = create_redis(url)
        try:
            for i in range(10):
                await client.set(f"{{d{i}}}", i)
            assert await client.get("{d9}") == b"9"
        finally:
            await client.aclose()
