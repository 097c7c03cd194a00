"""`make run-<service>`: a service's parts (API, workers, scheduler...) as child processes
sharing one log stream. When one exits, or on Ctrl-C / SIGTERM, all are stopped: SIGTERM
first (warm: running jobs finish or are handed back), SIGKILL after `grace` seconds.

    parts = {"api": ["-m", "task_queue", "serve"], "worker": ["-m", "task_queue.worker"]}
    return supervise("task queue", parts, env, banner="API on http://...; Ctrl-C stops all")
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def supervise(
    name: str,
    parts: dict[str, list[str]],
    env: dict[str, str],
    *,
    banner: str,
    grace: float = 20.0,
) -> int:
    """Run `python <argv>` for each part until one exits or a signal; returns the exit code
    of the part that exited first (0 after a signal)."""
    procs = {
        part: subprocess.Popen([sys.executable, *argv], env=env) for part, argv in parts.items()
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"{name}: {banner}", file=sys.stderr)
    code = 0
    while not stopping:
        exited = [(part, p.returncode) for part, p in procs.items() if p.poll() is not None]
        if exited:
            part, code = exited[0]
            print(f"{name}: {part} exited with {code}; stopping the rest", file=sys.stderr)
            break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs.values():
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code
