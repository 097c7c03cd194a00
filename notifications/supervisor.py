"""`python -m notifications all` (`make run-notifications`): the local sinks (SMTP, SMS,
webhook receiver), the API, one worker pool per channel (a failing channel never takes the
healthy ones' processes) and the sweeper, as child processes sharing one log stream. When
one exits, or on Ctrl-C / SIGTERM, all are stopped (common.supervisor)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from common.supervisor import supervise
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
    banner = (
        f"API on http://{settings.host}:{settings.port}, SMTP sink on "
        f"{settings.smtp_port}, SMS/webhook sink on {settings.sms_a_url}, "
        f"{len(CHANNELS)} worker pools, sweeper; Ctrl-C stops all"
    )
    return supervise("notifications", parts(settings), env, banner=banner)
