"""The experiment: what at-least-once really means, on real processes and a real Redis.

    make experiment-task_queue      # or: python -m task_queue.experiment [out.png]

(a) Ten 2-second jobs on raw Celery with 2 worker processes; once the first ones run, the
    whole worker is killed with kill -9 and a new one started. Under *acks early* a message
    is acknowledged when it is received, so the jobs the dead worker held are lost; under
    *acks late* they are acknowledged after running, so Redis hands them out again (after
    its visibility timeout) and some run twice.
(b) One job delayed 8 s while Redis's visibility timeout is 2 s: through raw Celery's ETA
    (`countdown=8`; the worker holds the unacknowledged message while it waits, and kombu's
    sweep puts messages unacknowledged for longer than the timeout back in the queue, so
    copies are delivered and scheduled again) and through this service (`delay_seconds=8`:
    the job waits in SQL and the scheduler sends it when due). How many times did each run?
Prints both tables, writes a chart (PNG), and says what each teaches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from common.processes import ROOT, ServiceProcess, wait_for
from common.redis_server import RedisProcess

OUT = Path(__file__).resolve().parent / "experiment.png"
JOBS, SECONDS = 10, 2.0
DELAY = 8  # seconds; Redis's visibility timeout is 2 s, swept every second


def _celery_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "task_queue.experiment_app:app", "worker",
         "-c", "2", "--pool", "prefork", "--loglevel", "WARNING"],
        env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=out,
    )  # fmt: skip


def _kill_9(proc: subprocess.Popen[bytes]) -> None:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    for pid in [proc.pid, *kids]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        _kill_9(proc)


def _counts(r: redis.Redis, key: str) -> dict[str, int]:
    return {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in r.hgetall(key).items()}


def _wait_until_quiet(r: redis.Redis, quiet: float = 6.0, limit: float = 90.0) -> None:
    """Until every job finished, or nothing has started or finished for `quiet` seconds."""
    deadline = time.monotonic() + limit
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        state = (r.hgetall("exp:started"), r.hgetall("exp:finished"))
        if len(state[1]) == JOBS and sum(int(v) for v in state[0].values()) == sum(
            int(v) for v in state[1].values()
        ):
            return
        if state != last:
            last, since = state, time.monotonic()
        elif time.monotonic() - since > quiet:
            return
        time.sleep(0.2)


def crash(redis_url: str, tmp: Path, *, acks_late: bool) -> tuple[int, int]:
    """(jobs lost, jobs run twice) when the worker is killed mid-run."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    env = {"EXP_REDIS_URL": redis_url, "EXP_ACKS_LATE": "1" if acks_late else "0", "EXP_VT": "4"}
    os.environ.update(env)
    from celery import Celery

    sender = Celery(broker=redis_url)
    worker = _celery_worker(env, tmp / "crash.log")
    wait_for(lambda: sender.control.ping(timeout=0.5), 60, interval=0.2)
    for i in range(JOBS):
        sender.send_task("experiment.work", args=[f"job{i}", SECONDS])
    wait_for(lambda: len(r.hgetall("exp:started")) >= 2, 60, interval=0.05)
    time.sleep(0.5)
    _kill_9(worker)
    # The replacement starts once the visibility timeout has passed: Redis then counts the
    # dead worker's unacknowledged messages as lost and hands them out again.
    time.sleep(5)
    replacement = _celery_worker(env, tmp / "crash.log")
    wait_for(lambda: sender.control.ping(timeout=0.5), 60, interval=0.2)  # it consumes
    _wait_until_quiet(r)
    _stop(replacement)
    sender.close()
    finished = _counts(r, "exp:finished")
    started = _counts(r, "exp:started")
    lost = sum(1 for i in range(JOBS) if finished.get(f"job{i}", 0) == 0)
    twice = sum(1 for i in range(JOBS) if started.get(f"job{i}", 0) >= 2)
    return lost, twice


def eta_runs(redis_url: str, tmp: Path) -> int:
    """How many times raw Celery ran one job given a long ETA under a 2 s visibility timeout."""
    r = redis.Redis.from_url(redis_url)
    r.flushdb()
    env = {"EXP_REDIS_URL": redis_url, "EXP_ACKS_LATE": "1", "EXP_VT": "2"}
    os.environ.update(env)
    from celery import Celery

    sender = Celery(broker=redis_url)
    worker = _celery_worker(env, tmp / "eta.log")
    wait_for(lambda: sender.control.ping(timeout=0.5), 60, interval=0.2)
    sender.send_task("experiment.work", args=["delayed", 0.1], countdown=DELAY)
    time.sleep(DELAY + 8)
    _stop(worker)
    sender.close()
    return int(r.hget("exp:finished", "delayed") or 0)


def service_runs(redis_url: str, tmp: Path) -> int:
    """How many times this service ran one job delayed as long, same visibility timeout."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "TASK_QUEUE_REDIS_URL": redis_url,
        "TASK_QUEUE_DATABASE_URL": f"sqlite:///{tmp / 'tq.db'}",
        "TASK_QUEUE_DATA_DIR": str(tmp),
        "TASK_QUEUE_ADMIN_KEY": "experiment-admin-key",
        "TASK_QUEUE_VISIBILITY_TIMEOUT_SECONDS": "2",
        "TASK_QUEUE_LOG_LEVEL": "WARNING",
        "TASK_QUEUE_LOG_FORMAT": "json",
    }
    api = ServiceProcess("task_queue", env, log_path=tmp / "api.log").start()
    out = open(tmp / "parts.log", "ab")  # noqa: SIM115 - owned by the processes

    def start(module: str) -> subprocess.Popen[bytes]:
        name = ["-n", f"w{len(parts)}@%h"] if "worker" in module else []
        return subprocess.Popen(
            [sys.executable, "-m", module, *name],
            env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=out,
        )  # fmt: skip

    parts: list[subprocess.Popen[bytes]] = []
    parts += [start("task_queue.worker"), start("task_queue.scheduler")]
    try:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            wait_for(lambda: c.get("/api/workers").json(), 60, interval=0.2)
            job = c.post(
                "/api/jobs",
                json={"type": "noop", "delay_seconds": DELAY},
                headers={"x-api-key": "experiment-admin-key"},
            ).json()
            time.sleep(DELAY + 8)
            return len(c.get(f"/api/jobs/{job['id']}").json()["attempts"])
    finally:
        for proc in parts:
            _stop(proc)
        api.stop()


def chart(path: Path, crashes: dict[str, tuple[int, int]], runs: dict[str, int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    modes = list(crashes)
    xs = range(len(modes))
    left.bar([x - 0.2 for x in xs], [crashes[m][0] for m in modes], 0.4, label="lost")
    left.bar([x + 0.2 for x in xs], [crashes[m][1] for m in modes], 0.4, label="ran twice")
    left.set_xticks(list(xs), modes)
    left.set_title(f"(a) kill -9 mid-run, {JOBS} jobs")
    left.set_ylabel("jobs")
    left.legend()
    right.bar(list(runs), list(runs.values()), color=["#c44", "#3a7"])
    right.set_title(f"(b) one job delayed {DELAY} s, visibility timeout 2 s")
    right.set_ylabel("times it ran")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    with tempfile.TemporaryDirectory() as tmp_dir, RedisProcess() as server:
        tmp = Path(tmp_dir)
        crashes = {
            "acks early": crash(server.url, tmp, acks_late=False),
            "acks late": crash(server.url, tmp, acks_late=True),
        }
        runs = {
            "raw Celery ETA": eta_runs(server.url, tmp),
            "this service": service_runs(server.url, tmp),
        }
    print(f"(a) kill -9 of a worker running {JOBS} jobs of {SECONDS:.0f} s")
    print(f"    {'mode':<12} {'lost':>5} {'ran twice':>10}")
    for mode, (lost, twice) in crashes.items():
        print(f"    {mode:<12} {lost:>5} {twice:>10}")
    print(f"(b) one job delayed {DELAY} s, Redis visibility timeout 2 s")
    for name, count in runs.items():
        print(f"    {name:<16} ran {count} time(s)")
    chart(out, crashes, runs)
    print(f"chart: {out}")
    print(
        "(a) teaches: acknowledging early trades duplicates for losses; acknowledging late "
        "loses nothing but runs some jobs twice, so jobs must be idempotent (or claimed once, "
        "as this service does with its dispatch numbers)."
    )
    print(
        "(b) teaches: a broker that redelivers unacknowledged messages after a timeout cannot "
        "hold a delay longer than that timeout; keep long delays out of the broker and send "
        "the job when it is due."
    )


if __name__ == "__main__":
    main()
