"""make bench-task_queue: no-op jobs per second end to end, this service vs raw Celery vs RQ.

One private Redis, the same number of worker processes for each (BENCH_WORKERS, default 2):
- this service: jobs submitted over its HTTP API (16 client threads), run by
  `python -m task_queue.worker`, done when SQL records every one `succeeded`;
- raw Celery: `send_task` of a no-op (no result backend, no tracking) to a prefork worker,
  done when each task has counted itself in Redis;
- RQ: `enqueue` to `rq worker` processes (RQ forks a work horse per job), same counting.
Then the service's submit-to-start latency (p50/p99) when idle, sequential submits. The HTTP
ceiling (GET /healthz on the same server, same 16 client threads) gives the bound for a job
that costs one HTTP request and one raw Celery run and nothing else.
Prints each figure and its ratio to raw Celery and to RQ.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from common.processes import ROOT, ServiceProcess, wait_for
from common.redis_server import RedisProcess

ADMIN = {"x-api-key": "bench-admin-key"}


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the process
    return subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=out)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _count_done(r: redis.Redis, target: int, timeout: float = 600) -> None:
    wait_for(lambda: int(r.get("bench:done") or 0) >= target, timeout, interval=0.01)


def _succeeded(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
    return body if body["status"] == "succeeded" else None


def _hammer(
    client: httpx.Client, n: int, request: Callable[[httpx.Client], httpx.Response]
) -> float:
    """Requests per second of `request` from 16 client threads (the submit benchmark's)."""

    def one(_: int) -> None:
        resp = request(client)
        if resp.status_code not in (200, 202):
            raise RuntimeError(f"{resp.status_code}: {resp.text}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))
    return n / (time.perf_counter() - started)


def bench_service(
    redis_url: str, tmp: Path, jobs: int, workers: int
) -> tuple[float, list[float], float]:
    db = tmp / "tq.db"
    env = {
        "TASK_QUEUE_REDIS_URL": redis_url,
        "TASK_QUEUE_DATABASE_URL": f"sqlite:///{db}",
        "TASK_QUEUE_DATA_DIR": str(tmp),
        "TASK_QUEUE_ADMIN_KEY": ADMIN["x-api-key"],
        "TASK_QUEUE_ACCESS_LOG": "false",
        "TASK_QUEUE_LOG_LEVEL": "WARNING",
        "TASK_QUEUE_LOG_FORMAT": "json",
    }
    api = ServiceProcess("task_queue", env, log_path=tmp / "api.log").start()
    worker = _start(
        [sys.executable, "-m", "task_queue.worker", "-c", str(workers), "--loglevel", "WARNING"],
        env,
        tmp / "worker.log",
    )
    try:
        with httpx.Client(base_url=api.url, headers=ADMIN, timeout=30) as c:
            wait_for(lambda: c.get("/api/workers").json(), 60, interval=0.2)
            c.post("/api/jobs", json={"type": "noop"})  # warm up
            # The HTTP ceiling: a trivial endpoint on the same server, from the same client.
            ceiling = _hammer(c, jobs, lambda c: c.get("/healthz"))
            time.sleep(1)
            started = time.perf_counter()
            _hammer(c, jobs, lambda c: c.post("/api/jobs", json={"type": "noop"}))
            submitted = time.perf_counter() - started

            def all_done() -> bool:
                with sqlite3.connect(db) as conn:
                    (n,) = conn.execute(
                        "SELECT count(*) FROM tq_jobs WHERE status='succeeded'"
                    ).fetchone()
                return bool(n >= jobs + 1)

            wait_for(all_done, 600, interval=0.05)
            rate = jobs / (time.perf_counter() - started)
            print(f"  (service: {jobs / submitted:.0f} submits/s over HTTP)", file=sys.stderr)
            latencies = []
            for _ in range(40):
                before = time.time()
                job = c.post("/api/jobs", json={"type": "noop"}).json()
                done = wait_for(functools.partial(_succeeded, c, job["id"]), 30, interval=0.005)
                latencies.append(datetime.fromisoformat(done["started_at"]).timestamp() - before)
        return rate, latencies, ceiling
    finally:
        _stop(worker)
        api.stop()


def bench_celery(redis_url: str, tmp: Path, jobs: int, workers: int) -> float:
    env = {"BENCH_REDIS_URL": redis_url}
    os.environ["BENCH_REDIS_URL"] = redis_url
    from benchmarks import task_queue_jobs

    task_queue_jobs.raw.conf.broker_url = redis_url
    r = redis.Redis.from_url(redis_url)
    r.delete("bench:done")
    worker = _start(
        [sys.executable, "-m", "celery", "-A", "benchmarks.task_queue_jobs:raw", "worker",
         "-c", str(workers), "--pool", "prefork", "--loglevel", "WARNING"],
        env,
        tmp / "celery.log",
    )  # fmt: skip
    try:
        task_queue_jobs.raw.send_task("bench.noop")
        _count_done(r, 1, 60)
        started = time.perf_counter()
        for _ in range(jobs):
            task_queue_jobs.raw.send_task("bench.noop")
        _count_done(r, jobs + 1)
        return jobs / (time.perf_counter() - started)
    finally:
        _stop(worker)


def bench_rq(redis_url: str, tmp: Path, jobs: int, workers: int) -> float:
    from rq import Queue

    env = {"BENCH_REDIS_URL": redis_url}
    r = redis.Redis.from_url(redis_url)
    r.delete("bench:done")
    procs = [
        _start([sys.executable, "-m", "rq.cli", "worker", "--url", redis_url, "-q", "bench"], env,
               tmp / f"rq{i}.log")
        for i in range(workers)
    ]  # fmt: skip
    try:
        from benchmarks.task_queue_rq import rq_noop

        queue = Queue("bench", connection=r)
        queue.enqueue(rq_noop)
        _count_done(r, 1, 60)
        started = time.perf_counter()
        for _ in range(jobs):
            queue.enqueue(rq_noop)
        _count_done(r, jobs + 1)
        return jobs / (time.perf_counter() - started)
    finally:
        for proc in procs:
            _stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", 2)))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir, RedisProcess() as server:
        tmp = Path(tmp_dir)
        url = server.url
        only = os.environ.get("BENCH_ONLY", "")
        service, latencies, ceiling = bench_service(url, tmp, args.jobs, args.workers)
        if only == "service":
            print(f"service: {service:.1f} jobs/s, p50 {statistics.median(latencies) * 1e3:.1f} ms")
            return
        redis.Redis.from_url(url).flushall()
        celery = bench_celery(url, tmp, args.jobs, args.workers)
        redis.Redis.from_url(url).flushall()
        rq = bench_rq(url, tmp, args.jobs, args.workers)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"no-op jobs, {args.jobs} per system, {args.workers} worker processes each")
    print(f"  this service (HTTP + SQL history): {service:8.1f} jobs/s")
    print(f"  raw Celery (no tracking):          {celery:8.1f} jobs/s")
    print(f"  RQ:                                {rq:8.1f} jobs/s")
    print(f"  HTTP ceiling (GET /healthz, same server and client): {ceiling:8.1f} requests/s")
    print(f"  service / raw Celery: {service / celery:.2f}x (goal >= 0.7x)")
    print(f"  service / RQ:         {service / rq:.2f}x (goal >= 2x)")
    # CPU is the shared resource (2 cores): a job that costs one trivial HTTP request plus a
    # raw Celery run, and nothing else, could at best go at the rate whose costs add.
    bound = 1 / (1 / ceiling + 1 / celery)
    print(
        f"  bound for one HTTP request + one raw Celery run per job: {bound:.1f} jobs/s "
        f"= {bound / celery:.2f}x raw Celery"
    )
    print(
        f"submit-to-start latency when idle: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
