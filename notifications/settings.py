"""Settings: environment variables prefixed NOTIFICATIONS_ (shared ones also unprefixed)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings

CHANNELS = ("email", "sms", "webhook", "inapp")


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFICATIONS_", env_file=".env", extra="ignore", validate_default=True
    )

    service_name: str = "notifications"
    port: int = Field(default=8005, ge=0, le=65535)
    # Always-valid key for writes (X-API-Key).
    admin_key: str = "dev-admin-key"
    # Signs webhook bodies (HMAC-SHA256); receivers verify with notifications.signing.
    webhook_secret: str = "dev-webhook-secret"
    broker_url: str | None = None
    # Processes per channel's worker pool (`make run-notifications` starts one pool per channel).
    workers: int = Field(default=2, ge=1, le=64)
    # SMTP server for email (the local sink by default: `python -m notifications sinks`).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    email_from: str = "notifications@localhost"
    # The two SMS providers' base URLs (the local sink serves both APIs), tried in this order.
    sms_a_url: str = "http://127.0.0.1:8026"
    sms_b_url: str = "http://127.0.0.1:8026"
    sms_providers: list[str] = Field(default_factory=lambda: ["sms_a", "sms_b"])
    # Webhooks to loopback/private addresses are refused unless this is true (tests, dev).
    allow_private_webhooks: bool = False
    # Seconds one provider call may take (connect + answer) before it counts as failed.
    send_timeout_seconds: float = Field(default=5.0, gt=0)
    # Retries: full jitter over min(cap, base * 2**attempt); Retry-After wins when longer.
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_base_seconds: float = Field(default=2.0, ge=0)
    backoff_cap_seconds: float = Field(default=600.0, ge=0)
    # Circuit breaker per provider: open after N failures in a row, probe after `reset`.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=30.0, gt=0)
    # Off: every call goes to the provider, however it is doing (the experiment's control).
    breaker_enabled: bool = True
    # A delivery claimed (or enqueued) but not finished within this is handed out again.
    lease_seconds: float = Field(default=60.0, gt=0)
    # How often the sweeper looks for due, deferred and lost deliveries.
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    # Per user and channel, deliveries per minute (0 turns the limit off).
    user_rate_per_minute: int = Field(default=60, ge=0)
    # How many of those may go at once before the pace applies (the GCRA bucket size).
    user_rate_burst: int = Field(default=10, ge=1)
    # Per channel, deliveries per second across all users (0 turns it off).
    channel_rate_per_second: int = Field(default=0, ge=0)
    # Topic fan-out: most subscribers one notification reaches synchronously.
    max_fanout: int = Field(default=10_000, ge=1)
    # An inbox stream (SSE) ends after this; the browser reconnects with Last-Event-ID.
    stream_lifetime_seconds: float = Field(default=300.0, gt=0)
    access_log: bool = True

    def checked(self) -> NotificationsSettings:
        """Refuse placeholder secrets in production; returns self."""
        self.require_secret("NOTIFICATIONS_ADMIN_KEY", self.admin_key)
        self.require_secret("NOTIFICATIONS_WEBHOOK_SECRET", self.webhook_secret)
        return self

    def database(self) -> str:
        return self.database_url or self.sqlite_url("notifications")
