"""The task queue's own Prometheus metrics, read from SQL and worker heartbeats on scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


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
