"""The notifications experiment, on real processes (a learner runs it; it is not a test):

    make experiment-notifications      # or: python -m benchmarks.notifications_experiment

(a) Retries vs duplicates: a webhook receiver that does its work and then answers 503 for
    30% of requests (its answer is lost, as after a timeout). The sender retries; the
    receiver sees some delivery ids twice. Count what a receiver without dedup would act on,
    and what one deduping on `Notifications-Delivery-Id` acts on.
(b) The circuit breaker: one worker pool serving both the webhook and SMS queues (no
    bulkheads, on purpose), webhooks and SMS submitted at a steady rate; after 5 s both SMS
    providers start timing out. With the breaker, SMS calls stop after a few failures and
    the pool keeps serving webhooks; without it, every SMS task holds a process for the full
    timeouts. Webhook deliveries and SMS provider calls per second, both runs, drawn to
    notifications/experiment.png.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

from benchmarks.notifications import start_stack
from common.redis_server import RedisProcess
from notifications.dispatch import queue_for
from notifications.stack import ADMIN, Stack

OUT = Path(__file__).resolve().parent.parent / "notifications" / "experiment.png"
RUN_SECONDS, FAIL_AT, RATE = 30, 5, 4  # per second, each channel


def dedup(stack: Stack, count: int = 100) -> tuple[int, int, int]:
    """(notifications, requests the receiver got, distinct delivery ids)."""
    hook = f"flaky{uuid.uuid4().hex[:6]}"
    stack.control(f"webhook:{hook}", "flaky", rate=0.3)
    user = stack.user(webhook_url=stack.hook_url(hook))
    ids = [
        stack.send(user_id=user, template="exp", data={"n": i}, channels=["webhook"])["id"]
        for i in range(count)
    ]
    for notification in ids:
        stack.wait_done(notification, timeout=120)
    got = [m for m in stack.received("webhook") if m["name"] == hook]
    distinct = {m["headers"]["notifications-delivery-id"] for m in got}
    return count, len(got), len(distinct)


def breaker_run(stack: Stack, db: Path, breaker: bool) -> tuple[Counter[int], Counter[int]]:
    """Per second since the start: webhooks received, SMS provider calls."""
    for worker in stack.workers:
        worker.stop()
    stack.workers.clear()
    stack.start_worker(
        queues=[queue_for("webhook"), queue_for("sms")],
        concurrency=2,
        NOTIFICATIONS_BREAKER_ENABLED="true" if breaker else "false",
        # Opens after 2 failures in a row, probes every 10 s.
        NOTIFICATIONS_BREAKER_FAILURES="2",
        NOTIFICATIONS_BREAKER_RESET_SECONDS="10",
    )
    for provider in ("sms_a", "sms_b"):
        stack.control(provider, "ok")
    hook = f"steady{uuid.uuid4().hex[:6]}"
    user = stack.user(phone="+15550002222", webhook_url=stack.hook_url(hook))
    start = time.time()
    stop = threading.Event()

    def failing_later() -> None:
        if not stop.wait(FAIL_AT):
            for provider in ("sms_a", "sms_b"):
                stack.control(provider, "timeout")

    threading.Thread(target=failing_later, daemon=True).start()
    sent: list[str] = []
    with httpx.Client(base_url=stack.api.url, timeout=30) as c:
        i = 0
        while time.time() - start < RUN_SECONDS:
            body = {
                "user_id": user,
                "template": "exp",
                "data": {"n": i},
                "channels": ["webhook", "sms"],
            }
            sent.append(c.post("/api/notifications", json=body, headers=ADMIN).json()["id"])
            i += 1
            time.sleep(max(0.0, start + i / RATE - time.time()))
        stop.set()
        # What still waits would spill into the next run (and its SMS calls): cancelled.
        for notification in sent:
            c.post(f"/api/notifications/{notification}/cancel", headers=ADMIN)
    hooks = Counter(int(m["at"] - start) for m in stack.received("webhook") if m["name"] == hook)
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.at FROM attempts a JOIN deliveries d ON d.id = a.delivery_id "
            "WHERE d.user_id = ? AND a.provider IN ('sms_a', 'sms_b')",
            (user,),
        ).fetchall()
    calls = Counter(int(at - start) for (at,) in rows if at >= start)
    for provider in ("sms_a", "sms_b"):
        stack.control(provider, "ok")
    return hooks, calls


def draw(runs: dict[str, tuple[Counter[int], Counter[int]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    seconds = list(range(RUN_SECONDS + 10))
    for label, (hooks, calls) in runs.items():
        top.plot(seconds, [hooks[s] for s in seconds], label=label)
        bottom.plot(seconds, [calls[s] for s in seconds], label=label)
    for axis in (top, bottom):
        axis.axvline(FAIL_AT, color="grey", linestyle="--")
        axis.legend()
    top.set_ylabel("webhooks delivered / s")
    bottom.set_ylabel("SMS provider calls / s")
    bottom.set_xlabel(f"seconds (SMS providers time out from t = {FAIL_AT} s)")
    top.set_title("One shared worker pool: the circuit breaker keeps the healthy channel going")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    with tempfile.TemporaryDirectory() as tmp_dir, RedisProcess() as redis:
        tmp = Path(tmp_dir)
        stack = start_stack(tmp, redis.url)
        try:
            stack.template(
                "exp", {"sms": {"text": "{{ n }}"}, "webhook": {"text": "{{ n }}"}}, {"n": 1}
            )
            sent, got, distinct = dedup(stack)
            runs = {
                "with circuit breaker": breaker_run(stack, tmp / "bench.db", True),
                "without circuit breaker": breaker_run(stack, tmp / "bench.db", False),
            }
        finally:
            stack.stop()
    print(f"(a) {sent} webhooks to a receiver that fails 30% of answers after doing the work:")
    print(f"    requests received {got}; without dedup it acts {got - sent} times too often,")
    print(f"    deduping on Notifications-Delivery-Id it acts {distinct} times (once each)")
    print(f"(b) webhooks delivered and SMS calls after t = {FAIL_AT} s (SMS timing out):")
    for label, (hooks, calls) in runs.items():
        after = sum(v for s, v in hooks.items() if s >= FAIL_AT)
        sms = sum(v for s, v in calls.items() if s >= FAIL_AT)
        print(f"    {label:24} webhooks {after:4}  SMS provider calls {sms:4}")
    draw(runs, out)
    print(f"chart: {out}")


if __name__ == "__main__":
    main()
