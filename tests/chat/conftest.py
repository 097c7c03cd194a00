"""Fixtures for chat: real `python -m chat` processes on one Redis, and WebSocket clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.redis_server import RedisProcess
from tests.support import ServiceProcess

SECRET = "test-chat-secret-0123456789-abcdefgh"

# Short presence timings, so expiry after a crash is seen within a test.
FAST = {
    "CHAT_JWT_SECRET": SECRET,
    "CHAT_ACCESS_LOG": "false",
    "CHAT_LOG_FORMAT": "json",
    "CHAT_LOG_LEVEL": "WARNING",
    "CHAT_PRESENCE_INTERVAL": "0.3",
    "CHAT_PRESENCE_TTL": "1.5",
    "CHAT_RECEIPT_INTERVAL": "0.1",
    "CHAT_GAP_WAIT": "0.1",
}

Start = Callable[..., ServiceProcess]


def chat_env(redis_url: str, database_url: str, data_dir: Path, **env: str) -> dict[str, str]:
    return {
        "CHAT_REDIS_URL": redis_url,
        "CHAT_DATABASE_URL": database_url,
        "CHAT_DATA_DIR": str(data_dir),
        **FAST,
        **env,
    }


@pytest.fixture
def chat(database_url: str, tmp_path: Path, service_factory: Start) -> Start:
    """Start a real `python -m chat` on a free port; all of a test's share one database
    (set up first, so it is dropped only after the servers have stopped)."""

    def start(redis_url: str, **env: str) -> ServiceProcess:
        return service_factory("chat", chat_env(redis_url, database_url, tmp_path / "data", **env))

    return start


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Two instances on the session's Redis and one SQLite file, shared by a module's tests
    (each test makes its own users and rooms)."""
    tmp = tmp_path_factory.mktemp("chat")
    env = chat_env(redis_server.url, f"sqlite:///{tmp / 'chat.db'}", tmp / "data")
    procs = [ServiceProcess("chat", env, log_path=tmp / f"chat-{i}.log") for i in range(2)]
    try:
        procs[0].start()
        procs[1].start()
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.stop()


def unique(prefix: str = "u") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
