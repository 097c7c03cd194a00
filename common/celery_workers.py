"""Real Celery worker processes for tests and benchmarks (prefork pool, a real broker): never
eager mode.

    worker = CeleryWorker(["-A", "task_queue.tasks:celery_app"], env, log_path=...)
    worker.start()          # returns once the worker answers a ping over the broker
    worker.kill_child(pid)  # kill -9 one pool process (the job it ran is redelivered)
    worker.stop()           # warm shutdown (SIGTERM), then SIGKILL after a timeout

The fixture `celery_worker_factory` (tests/conftest.py) starts them and stops them all after
the test; module-scoped copies share one pool between a module's tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from celery import Celery

from common.processes import end, launch, wait_for


class CeleryWorker:
    """`celery worker` as a real process; `argv` names the app (`-A module:app`) and any
    worker options, or `module` runs `python -m <module>` (a service's own worker entry)."""

    _count = 0

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        *,
        log_path: Path,
        broker_url: str,
        concurrency: int = 2,
        queues: list[str] | None = None,
        module: str | None = None,
    ) -> None:
        CeleryWorker._count += 1
        self.hostname = f"test{CeleryWorker._count}-{os.getpid()}@127.0.0.1"
        self.broker_url = broker_url
        self.log_path = log_path
        self.env = env
        options = ["--hostname", self.hostname, "-c", str(concurrency), "--pool", "prefork"]
        if queues:
            options += ["-Q", ",".join(queues)]
        if module:
            self.argv = ["-m", module, *argv, *options]
        else:
            self.argv = ["-m", "celery", *argv, "worker", *options]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ping(self) -> bool:
        """Whether the worker answers over the broker (it is consuming)."""
        probe = Celery(broker=self.broker_url)
        try:
            replies = probe.control.ping(destination=[self.hostname], timeout=0.5)
        except Exception:
            return False
        finally:
            probe.close()
        return bool(replies)

    def start(self, timeout: float = 60.0) -> CeleryWorker:
        self.proc = launch(self.argv, self.env, self.log_path)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.logs()}")
            return self.ping()

        wait_for(ready, timeout, interval=0.2)
        return self

    def children(self) -> list[int]:
        """The pool's process ids (Linux /proc)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill_child(self, pid: int) -> None:
        """kill -9 one pool process, as the OOM killer would."""
        assert pid in self.children(), f"{pid} is not a child of worker {self.pid}"
        os.kill(pid, signal.SIGKILL)

    def kill(self) -> None:
        """kill -9 the whole worker: the main process and its pool."""
        if self.proc is None:
            return
        kids = self.children()
        self.proc.kill()
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        kids = self.children()
        end(self.proc, timeout=timeout)
        deadline = time.monotonic() + 5
        for pid in kids:  # a pool process must not outlive its parent
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")
