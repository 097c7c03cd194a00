"""The lean pipelined connection: ordering, errors, auth and db, stuck and dead servers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.redis import create_redis
from rate_limiter.backends.pipelined import PipelinedConnection, pack, pack_evalsha


def test_packing() -> None:
    assert pack(("PING",)) == b"*1\r\n$4\r\nPING\r\n"
    assert pack_evalsha("s", ["k"], [b"a", 7]) == pack(("EVALSHA", "s", 1, "k", b"a", 7))


async def test_replies_come_back_in_order_and_errors_map(redis_url: str) -> None:
    client = create_redis(redis_url)
    conn = PipelinedConnection.from_redis_py(client)
    assert conn is not None
    try:
        results = await asyncio.gather(*(conn.execute("INCR", "n") for _ in range(200)))
        assert results == list(range(1, 201))
        with pytest.raises(NoScriptError):
            await conn.execute("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError):
            await conn.execute("NOSUCHCOMMAND")
        assert await conn.execute("PING") == b"PONG"  # still usable after errors
    finally:
        await conn.aclose()
        await client.aclose()


async def test_password_and_database_are_honoured(redis_url: str) -> None:
    with sync_redis.Redis.from_url(redis_url) as admin:
        admin.config_set("requirepass", "s3cret")
    try:
        url = redis_url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/3"
        client = create_redis(url)
        conn = PipelinedConnection.from_redis_py(client)
        assert conn is not None and conn.db == 3
        await conn.execute("SET", "where", "db3")
        assert await client.get("where") == b"db3"
        await conn.aclose()
        await client.aclose()
    finally:
        with sync_redis.Redis.from_url(redis_url, password="s3cret") as admin:
            admin.config_set("requirepass", "")


async def _pong_server(delay: float, answers: int) -> tuple[asyncio.Server, int]:
    """A server that answers the first `answers` PINGs `delay` seconds apart, then nothing."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(answers):
            await reader.readuntil(b"PING\r\n")
            await asyncio.sleep(delay)
            writer.write(b"+PONG\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_stuck_server_times_out_and_a_dead_one_refuses() -> None:
    server, port = await _pong_server(0, 0)  # accepts, never answers
    conn = PipelinedConnection("127.0.0.1", port, timeout=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await asyncio.gather(conn.execute("PING"), conn.execute("PING"))
    finally:
        await conn.aclose()
        server.close()
    dead = PipelinedConnection("127.0.0.1", port, timeout=0.2)
    with pytest.raises(RedisConnectionError):
        await dead.execute("PING")


async def test_a_slow_server_that_keeps_answering_is_not_taken_for_a_stuck_one() -> None:
    # Five commands in one write, answered 0.15 s apart: the last comes back after 0.75 s,
    # well past the 0.3 s timeout, but a reply arrives within every timeout: not stuck.
    server, port = await _pong_server(0.15, 5)
    conn = PipelinedConnection("127.0.0.1", port, timeout=0.3)
    try:
        assert await asyncio.gather(*(conn.execute("PING") for _ in range(5))) == [b"PONG"] * 5
        # Then it stops answering: the next command fails within two timeouts.
        started = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await conn.execute("PING")
        assert 0.3 <= time.monotonic() - started < 0.3 * 2 + 0.2
    finally:
        await conn.aclose()
        server.close()


async def test_one_watchdog_per_connection_not_one_per_write(redis_url: str) -> None:
    """A timer per write would keep one handle per write alive for `timeout` (work for the
    cyclic GC on a busy server): writes share the connection's one watchdog."""
    conn = PipelinedConnection.from_redis_py(create_redis(redis_url))
    assert conn is not None
    loop = asyncio.get_running_loop()
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    for _ in range(200):  # 200 writes, each in its own loop turn
        assert await conn.execute("PING") == b"PONG"
    assert len(loop._scheduled) - before <= 1  # type: ignore[attr-defined]
    await conn.aclose()


def test_clients_it_cannot_speak_for_are_left_to_redis_py() -> None:
    from redis.asyncio import RedisCluster

    from rate_limiter import RedisBackend

    cluster = RedisCluster(host="127.0.0.1", port=1)  # never connects: nothing is awaited
    assert PipelinedConnection.from_redis_py(cluster) is None
    assert PipelinedConnection.from_redis_py(object()) is None
    assert RedisBackend(cluster)._lean is None  # type: ignore[arg-type]


@pytest.fixture
def unix_redis() -> Iterator[str]:
    """A real redis-server listening only on a Unix socket (short path: sun_path is small)."""
    from common.redis_server import redis_binary

    folder = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    sock = folder / "r.sock"
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--unixsocket", str(sock), "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with sync_redis.Redis(unix_socket_path=str(sock)) as r:
                    r.ping()
                break
            except sync_redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.02)
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("autopipeline", [True, False])
async def test_the_redis_py_path_over_a_unix_socket(unix_redis: str, autopipeline: bool) -> None:
    from redis.asyncio import Redis

    from rate_limiter import Algorithm, Limit, RedisBackend

    client = Redis(unix_socket_path=unix_redis)
    assert PipelinedConnection.from_redis_py(client) is None
    backend = RedisBackend(client, autopipeline=autopipeline)
    assert backend._lean is None
    try:
        await backend.load()
        for algorithm in Algorithm:
            limit = Limit(10, 3600, algorithm)
            results = await asyncio.gather(*(backend.acquire("u", limit) for _ in range(30)))
            assert sum(d.allowed for d in results) == 10, algorithm
        limit = Limit(2, 3600, Algorithm.CONCURRENCY)
        held = await backend.acquire("c", limit, 2)
        assert held.lease and not (await backend.acquire("c", limit)).allowed
        await backend.release("c", limit, held.lease)
        assert (await backend.acquire("c", limit)).allowed
    finally:
        await backend.aclose()
        await client.aclose()


@pytest.mark.parametrize(
    "kwargs", [{"db": 99}, {"password": "nope"}, {"db": 99, "password": "nope"}], ids=str
)
async def test_a_failed_setup_never_leaves_a_half_set_up_connection(
    redis_url: str, kwargs: dict
) -> None:
    """SELECT of a missing database, AUTH on a server without a password: the connection is
    dropped and every call fails, instead of later commands landing in db 0."""
    client = create_redis(redis_url)
    lean = PipelinedConnection.from_redis_py(client)
    assert lean is not None
    conn = PipelinedConnection(lean.host, lean.port, **kwargs)
    try:
        for _ in range(2):
            with pytest.raises(RedisConnectionError, match="Redis refused"):
                await conn.execute("SET", "where", "x")
        assert await client.get("where") is None
    finally:
        await conn.aclose()
        await client.aclose()


async def test_commands_go_to_the_selected_database(redis_url: str) -> None:
    client = create_redis(redis_url)
    lean = PipelinedConnection.from_redis_py(client)
    assert lean is not None
    conn = PipelinedConnection(lean.host, lean.port, db=3)
    try:
        await asyncio.gather(*(conn.execute("INCR", "n") for _ in range(20)))
        assert await client.get("n") is None
        with sync_redis.Redis(host=lean.host, port=lean.port, db=3) as db3:
            assert db3.get("n") == b"20"
    finally:
        await conn.aclose()
        await client.aclose()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_a_backend_outlives_its_event_loop(redis_url: str, loop_kind: str) -> None:
    """A program that calls `asyncio.run` more than once with one backend: the connection
    made on the first loop is dropped and remade on the next, with no error and no wait."""
    import uvloop

    from common.redis import create_redis
    from rate_limiter import Limit, RedisBackend

    run = uvloop.run if loop_kind == "uvloop" else asyncio.run
    client = create_redis(redis_url)
    backend = RedisBackend(client)
    limit = Limit.per_minute(100)
    key = f"stale-loop-{loop_kind}-{time.monotonic_ns()}"

    async def twice() -> list[int]:
        return [(await backend.acquire(key, limit)).remaining for _ in range(2)]

    run(backend.load())  # (redis-py's own pool is not used again: it is bound to its loop)
    assert run(twice()) == [99, 98]  # the second call took the pipelined path
    started = time.monotonic()
    assert run(twice()) == [97, 96]
    assert time.monotonic() - started < 0.4  # reconnected at once, not after a timeout
    assert backend._lean is not None and backend._lean.ready
    run(backend.aclose())
