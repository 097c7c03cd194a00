"""Notifications benchmark: does a failing channel slow the healthy one?

One stack (API, sweeper, local sinks, a worker pool per channel: webhook and SMS, 2 processes
each) on a private Redis and SQLite. Each phase submits the same notifications, each to the
webhook and SMS channels, and measures the webhook channel's throughput end to end (first
submit to the last webhook the receiver got):

  healthy      both providers answer (the baseline: before and after the others, averaged,
               so a machine whose load drifts during the run moves both sides)
  sms failing  both SMS providers answer 503 to every call
  sms timeout  both SMS providers never answer (the client's timeout ends each call)

After each phase the SMS providers answer again and the run waits until no SMS delivery is
left waiting, so every phase starts from the same state (a phase never pays for the backlog
an earlier one left).

Goal: the webhook channel keeps >= 0.9x its healthy throughput in both failing phases.

    make bench-notifications            (python -m benchmarks.notifications --count 300)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from common.processes import ChildProcess, ServiceProcess, wait_for
from common.redis_server import RedisProcess, free_port
from notifications.delivery import WAITING
from notifications.dispatch import queue_for
from notifications.stack import ADMIN, Stack, stack_env

TEMPLATE = {"sms": {"text": "{{ n }}"}, "webhook": {"text": "{{ n }}"}}


def start_stack(tmp: Path, redis_url: str) -> Stack:
    smtp, http = free_port(), free_port()
    env = stack_env(redis_url, f"sqlite:///{tmp / 'bench.db'}", tmp, smtp, http)
    env |= {
        "NOTIFICATIONS_LOG_LEVEL": "WARNING",
        "NOTIFICATIONS_SEND_TIMEOUT_SECONDS": "2",
        "NOTIFICATIONS_MAX_ATTEMPTS": "5",
        "NOTIFICATIONS_BREAKER_FAILURES": "5",
        "NOTIFICATIONS_BREAKER_RESET_SECONDS": "5",
        "NOTIFICATIONS_LEASE_SECONDS": "30",
    }
    sinks = ChildProcess(
        ["-m", "notifications.sinks", "--smtp-port", str(smtp), "--http-port", str(http)],
        env,
        tmp / "sinks.log",
    )
    sink_url = f"http://127.0.0.1:{http}"
    wait_for(lambda: _up(sink_url), 60)
    api = ServiceProcess("notifications", env, log_path=tmp / "api.log").start(timeout=60)
    stack = Stack(env=env, api=api, tmp=tmp, sink_url=sink_url, broker_url=redis_url)
    stack.children.append(sinks)
    stack.start_worker(queues=[queue_for("webhook")], concurrency=2)
    stack.start_worker(queues=[queue_for("sms")], concurrency=2)
    stack.start_sweeper()
    return stack


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def phase(stack: Stack, count: int, sms_mode: str) -> float:
    """Webhook notifications per second while SMS is in `sms_mode`."""
    for provider in ("sms_a", "sms_b"):
        stack.control(provider, sms_mode)
    hook = f"bench{uuid.uuid4().hex[:6]}"
    user = stack.user(phone="+15550001234", webhook_url=stack.hook_url(hook))
    body = {"user_id": user, "template": "bench", "channels": ["webhook", "sms"]}
    started = time.monotonic()

    def submit(i: int) -> None:
        with httpx.Client(base_url=stack.api.url, timeout=30) as c:
            c.post("/api/notifications", json={**body, "data": {"n": i}}, headers=ADMIN)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(submit, range(count)))

    def all_received() -> bool:
        with stack.sink as c:
            got = c.get("/messages", params={"kind": "webhook"}).json()
        return sum(1 for m in got if m["name"] == hook) >= count

    wait_for(all_received, 600, interval=0.2)
    rate = count / (time.monotonic() - started)
    settle(stack)
    return rate


def settle(stack: Stack) -> None:
    """SMS answers again; wait until none of its deliveries waits (the next phase's start)."""
    for provider in ("sms_a", "sms_b"):
        stack.control(provider, "ok")
    db = stack.tmp / "bench.db"
    waiting = ", ".join(f"'{s}'" for s in (*WAITING, "sending"))

    def settled() -> bool:
        with sqlite3.connect(db, timeout=30) as conn:
            left = conn.execute(f"SELECT count(*) FROM deliveries WHERE status IN ({waiting})")
            return int(left.fetchone()[0]) == 0

    wait_for(settled, 600, interval=0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir, RedisProcess() as redis:
        stack = start_stack(Path(tmp_dir), redis.url)
        try:
            stack.template("bench", TEMPLATE, {"n": 1})
            phase(stack, 20, "ok")  # warm every pool process up
            before = phase(stack, args.count, "ok")
            failing = phase(stack, args.count, "fail")
            timing_out = phase(stack, args.count, "timeout")
            after = phase(stack, args.count, "ok")
        finally:
            for provider in ("sms_a", "sms_b"):
                stack.control(provider, "ok")
            stack.stop()
    print(f"webhook notifications end to end, {args.count} per phase (each also sent by SMS)")
    healthy = (before + after) / 2
    print(f"  SMS healthy (baseline): {healthy:8.1f} /s  (before {before:.1f}, after {after:.1f})")
    for label, value in (("SMS failing every call:", failing), ("SMS timing out:", timing_out)):
        print(f"  {label:23} {value:8.1f} /s  {value / healthy:.2f}x (goal >= 0.9x)")


if __name__ == "__main__":
    main()
