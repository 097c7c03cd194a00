"""Settings: environment variables prefixed TASK_QUEUE_ (shared ones also unprefixed)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class TaskQueueSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASK_QUEUE_", env_file=".env", extra="ignore", validate_default=True
    )

    service_name: str = "task_queue"
    port: int = Field(default=8002, ge=0, le=65535)
    # Always-valid key for writes (X-API-Key).
    admin_key: str = "dev-admin-key"
    # The Celery broker: RabbitMQ (amqp://...) or another Redis; default: redis_url.
    broker_url: str | None = None
    # Worker processes `make run-task_queue` starts (and `python -m task_queue.worker -c`).
    workers: int = Field(default=2, ge=1, le=64)
    queues: list[str] = Field(default_factory=lambda: ["default", "cpu", "io"])
    # Retry backoff: full jitter over min(cap, base * 2**attempt) seconds.
    backoff_base_seconds: float = Field(default=1.0, ge=0)
    backoff_cap_seconds: float = Field(default=300.0, ge=0)
    default_max_retries: int = Field(default=3, ge=0, le=100)
    default_timeout_seconds: float = Field(default=300.0, gt=0)
    # Seconds between a soft timeout (the job may clean up) and the hard kill.
    hard_timeout_grace_seconds: float = Field(default=5.0, ge=0.1)
    # A running job writes a heartbeat this often; the reaper calls it lost after `timeout`.
    heartbeat_seconds: float = Field(default=2.0, gt=0)
    heartbeat_timeout_seconds: float = Field(default=10.0, gt=0)
    # How often the scheduler looks for due jobs, schedules and lost jobs.
    scheduler_interval_seconds: float = Field(default=0.5, gt=0)
    # Redis's visibility timeout (seconds): unacknowledged messages come back after it.
    visibility_timeout_seconds: float = Field(default=3600.0, gt=0)
    # Per-type rate limits shared by every worker, e.g. {"fetch": 10} (jobs per second).
    rate_limits: dict[str, float] = Field(default_factory=lambda: {"fetch": 20.0})
    # Largest `args` accepted at submit, in bytes of JSON.
    max_args_bytes: int = Field(default=65_536, ge=64)
    access_log: bool = True
    # Each worker serves its Prometheus metrics (jobs by type, run time, queue wait) on this
    # port at /metrics, its pool processes' figures summed; 0 turns it off.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    def checked(self) -> TaskQueueSettings:
        """Refuse placeholder secrets in production; returns self."""
        self.require_secret("TASK_QUEUE_ADMIN_KEY", self.admin_key)
        return self

    def database(self) -> str:
        return self.database_url or self.sqlite_url("task_queue")
