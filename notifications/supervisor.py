"""`python -m notifications all` (`make run-notifications`): the local sinks (SMTP, SMS,
webhook receiver), the API, one worker pool per channel (a failing channel never takes the
healthy ones' processes) and the sweeper, as child processes sharing one log stream. When
one exits, or on Ctrl-C / SIGTERM, all are stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

from notifications.dispatch import queue_for
from notifications.settings import CHANNELS, NotificationsSettings


def parts(settings: NotificationsSettings) -> dict[str, list[str]]:
    sms_port = urlsplit(settings.sms_a_url).port or 8026
    found = {
        "sinks": [
            "-m",
            "notifications.sinks",
            "--smtp-port",
            str(settings.smtp_port),
            "--http-port",
            str(sms_port),
        ],
        "api": ["-m", "notifications", "serve"],
        "sweeper": ["-m", "notifications.sweeper"],
    }
    for channel in CHANNELS:
        found[f"worker-{channel}"] = [
            "-m",
            "notifications.worker",
            "-Q",
            queue_for(channel),
            "-c",
            str(settings.workers),
            "--hostname",
            f"{channel}@%h",
        ]
    return found


def run_all(settings: NotificationsSettings) -> int:
    env = {**os.environ, "NOTIFICATIONS_REDIS_URL": settings.redis_url or ""}
    # The local sinks and webhook receiver listen on loopback.
    env.setdefault("NOTIFICATIONS_ALLOW_PRIVATE_WEBHOOKS", "true")
    procs = {
        name: subprocess.Popen([sys.executable, *argv], env=env)
        for name, argv in parts(settings).items()
    }
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(
        f"notifications: API on http://{settings.host}:{settings.port}, SMTP sink on "
        f"{settings.smtp_port}, SMS/webhook sink on {settings.sms_a_url}, "
        f"{len(CHANNELS)} worker pools, sweeper; Ctrl-C stops all",
        file=sys.stderr,
    )
    code = 0
    while not stopping:
        exited = [(n, p.returncode) for n, p in procs.items() if p.poll() is not None]
        if exited:
            name, code = exited[0]
            print(f"notifications: {name} exited with {code}; stopping the rest", file=sys.stderr)
            break
        time.sleep(0.2)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs.values():
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return code
