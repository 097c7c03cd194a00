"""Helpers the tests share: a clock moved by hand, the migrations check, fresh SQL databases,
and (from common/processes.py, which the benchmarks use too) real server processes on free
ports, helper processes, and waiting for conditions."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from common.processes import ROOT, ChildProcess, ServiceProcess, wait_for

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")

__all__ = [
    "ROOT",
    "ChildProcess",
    "Databases",
    "ManualClock",
    "RabbitVhost",
    "ServiceProcess",
    "migrations_match_models",
    "wait_for",
]


class ManualClock:
    """A monotonic clock (seconds) that moves only when a test moves it: for code that takes
    a `clock` (a circuit breaker's reset, a prefetched batch's expiry). Never for Redis, whose
    own clock decides."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def migrations_match_models(url: str, package: str, metadata: Any) -> list[Any]:
    """Upgrade the (empty) database at `url` to head through `package`'s migrations and
    return what autogenerate still finds against `metadata`: [] when they agree."""
    import asyncio

    from common.db import create_engine
    from common.migrations import differences, upgrade

    async def run() -> list[Any]:
        engine = create_engine(url)
        try:
            await upgrade(engine, package)
            async with engine.connect() as conn:
                return await conn.run_sync(differences, metadata)
        finally:
            await engine.dispose()

    return asyncio.run(run())


class Databases:
    """Fresh, empty SQL databases of one kind: SQLite files in `folder`, or schemas of their
    own in the PostgreSQL under test (dropped by `drop_all`)."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.schemas: list[str] = []
        self.made = 0

    def new(self, name: str = "test") -> str:
        self.made += 1
        if self.kind == "sqlite":
            suffix = "" if self.made == 1 else str(self.made)
            return f"sqlite:///{self.folder / f'{name}{suffix}.db'}"
        import psycopg

        assert TEST_DATABASE_URL
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(TEST_DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.schemas.append(schema)
        sep = "&" if "?" in TEST_DATABASE_URL else "?"
        return f"{TEST_DATABASE_URL}{sep}options=-csearch_path%3D{schema}"

    def drop_all(self) -> None:
        if not self.schemas:
            return
        import psycopg

        with psycopg.connect(str(TEST_DATABASE_URL), autocommit=True) as conn:
            while self.schemas:
                conn.execute(f'DROP SCHEMA "{self.schemas.pop()}" CASCADE')


class RabbitVhost:
    """A vhost of one's own on the RabbitMQ at `url` (`TEST_AMQP_URL`), made and deleted with
    `rabbitmqctl`, so that no other test run on the same server (another worktree's, another
    xdist worker's) shares its queues or Celery's broadcast exchanges. Only for a RabbitMQ on
    this machine, where `rabbitmqctl` reaches it; elsewhere `url` is `None`."""

    def __init__(self, url: str) -> None:
        self.base = url
        self.name = f"tests-{uuid.uuid4().hex[:12]}"
        self.url: str | None = None

    def create(self) -> str | None:
        parts = urlsplit(self.base)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or not shutil.which(
            "rabbitmqctl"
        ):
            return None
        user = unquote(parts.username or "guest")
        try:
            self._ctl("add_vhost", self.name)
            self.url = urlunsplit(parts._replace(path="/" + quote(self.name, safe="")))
            self._ctl("set_permissions", "-p", self.name, user, ".*", ".*", ".*")
        except (OSError, subprocess.SubprocessError):
            self.delete()
            return None
        return self.url

    def delete(self) -> None:
        if self.url is None:
            return
        self.url = None
        # A vhost left behind holds no more than its empty queues.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._ctl("delete_vhost", self.name)

    @staticmethod
    def _ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=30)
