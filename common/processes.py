"""Real service processes on free loopback ports, and waiting for conditions: what the tests
and the benchmarks both need (neither imports the other)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from common.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; returns its value or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s (last value: {last!r})")


def launch(argv: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python <argv>` from the repository's root, `env` over this process's environment,
    its output appended to `log_path`."""
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, *argv],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )


def end(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
    """Send `sig` (SIGTERM: a graceful stop), wait up to `timeout`, then SIGKILL; the exit
    code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ChildProcess:
    """`python <argv>` with no port to wait on (a scheduler, a sweeper, the local sinks),
    started at once; its log beside the test's other files."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.proc = launch(argv, env, log_path)

    def stop(self, timeout: float = 10.0) -> None:
        end(self.proc, timeout=timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class ServiceProcess:
    """`python -m <module>` as a real process on a free loopback port.

    The port is passed as `<PREFIX>_PORT` (the prefix defaults to the module's name, as the
    services' settings expect). Tests and benchmarks both start servers this way."""

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        *,
        log_path: Path,
        env_prefix: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.args = list(args)
        self.env = env
        self.env_prefix = env_prefix or module.upper()
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServiceProcess:
        prefix = self.env_prefix
        env = {**self.env, f"{prefix}_PORT": str(self.port), f"{prefix}_HOST": "127.0.0.1"}
        self.proc = launch(["-m", self.module, *self.args], env, self.log_path)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited early:\n{self.log_path.read_text()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        code = end(self.proc, sig, timeout)
        self.proc = None
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
