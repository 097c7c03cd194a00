"""The task queue's Prometheus metrics: the API's (QueueMetrics), the workers' (WorkerMetrics)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)


class QueueMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.submitted = Counter(
            "task_queue_jobs_submitted", "Jobs accepted by the API.", ["type"], registry=registry
        )
        self.deduplicated = Counter(
            "task_queue_jobs_deduplicated",
            "Submits answered with an existing job (idempotency key).",
            registry=registry,
        )


# Seconds: a no-op runs in a millisecond, a sleep job for minutes.
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800)


class WorkerMetrics:
    """What workers do, per job type; served by each worker at TASK_QUEUE_WORKER_METRICS_PORT
    (its pool processes write through prometheus_client's multiprocess files)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        def counter(name: str, text: str) -> Counter:
            return Counter(f"task_queue_worker_jobs_{name}", text, ["type"], registry=registry)

        self.started = counter("started", "Attempts started (claimed by a worker process).")
        self.succeeded = counter("succeeded", "Attempts that succeeded.")
        self.failed = counter("failed", "Attempts that failed for good (permanent or dead).")
        self.retried = counter("retried", "Attempts that failed and will be retried.")
        self.run_seconds = Histogram(
            "task_queue_worker_job_run_seconds",
            "How long an attempt ran, by how it ended.",
            ["type", "status"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.queue_wait_seconds = Histogram(
            "task_queue_worker_queue_wait_seconds",
            "From queued (sent to the broker) to started by a worker.",
            ["type"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )

    def ended(self, type_name: str, status: str, seconds: float) -> None:
        """Count an attempt's end (status: succeeded, retrying, failed or dead)."""
        by_status = {"succeeded": self.succeeded, "retrying": self.retried}
        by_status.get(status, self.failed).labels(type=type_name).inc()
        self.run_seconds.labels(type=type_name, status=status).observe(seconds)


def serve_worker_metrics(port: int, host: str) -> None:
    """Serve the metrics of this worker and of every pool process it forks at
    http://host:port/metrics (prometheus_client's multiprocess mode: each process writes
    its own files, a scrape sums them). Call before any metric is built."""
    path = tempfile.mkdtemp(prefix="tq-worker-metrics-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values.ValueClass = values.MultiProcessValue()  # metrics built from now on write files
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    start_http_server(port, addr=host, registry=registry)
