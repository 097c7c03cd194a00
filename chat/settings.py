"""Settings: environment variables prefixed CHAT_ (shared ones also unprefixed)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings


class ChatSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CHAT_", env_file=".env", extra="ignore", validate_default=True
    )

    service_name: str = "chat"
    port: int = Field(default=8003, ge=0, le=65535)
    # Signs access tokens; a placeholder refuses to start in production.
    jwt_secret: str = "dev-chat-jwt-secret-not-for-production"
    token_ttl_seconds: int = Field(default=3600, ge=1)
    # Largest client frame accepted (bytes); bigger ones get an `error` frame.
    max_frame_bytes: int = Field(default=16_384, ge=256)
    max_text_chars: int = Field(default=4000, ge=1)
    # Frames queued for one connection before it counts as a slow consumer and is closed.
    send_queue_size: int = Field(default=1000, ge=1)
    # Seconds a closing connection's close frame may wait behind data the client has not read.
    close_timeout: float = Field(default=10.0, gt=0)
    # Sends (and edits, deletes) per connection: rate per second and burst.
    send_rate_per_second: int = Field(default=20, ge=1)
    send_burst: int = Field(default=40, ge=1)
    # Presence: each instance refreshes its users every interval; an entry not refreshed
    # within the TTL (an instance that died) disappears.
    presence_interval: float = Field(default=5.0, gt=0)
    presence_ttl: float = Field(default=15.0, gt=0)
    # Joins and leaves within this many seconds are announced in one presence frame.
    presence_debounce: float = Field(default=0.05, ge=0)
    # Seconds a Redis call may take: a busy event loop reads late, so not too short.
    redis_timeout: float = Field(default=2.0, gt=0)
    # Every so often each instance compares its rooms' last seq with SQL and fetches what a
    # failed publish kept from it.
    reconcile_interval: float = Field(default=2.0, gt=0)
    # How long a message that arrives ahead of a missing seq waits before SQL fills the gap.
    gap_wait: float = Field(default=0.2, ge=0)
    # Delivered watermarks are written to Redis and announced at most this often.
    receipt_interval: float = Field(default=0.5, gt=0)
    # Announce delivered watermarks (WhatsApp's grey ticks); read ones are always announced.
    delivery_receipts: bool = True
    access_log: bool = True

    def checked(self) -> ChatSettings:
        """Refuse placeholder secrets in production; returns self."""
        self.require_secret("CHAT_JWT_SECRET", self.jwt_secret)
        return self
