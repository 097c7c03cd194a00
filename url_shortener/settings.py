"""Settings: environment variables prefixed URL_SHORTENER_ (shared ones also unprefixed)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from common.settings import ServiceSettings


class UrlShortenerSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="URL_SHORTENER_", env_file=".env", extra="ignore", validate_default=True
    )

    service_name: str = "url_shortener"
    port: int = Field(default=8001, ge=0, le=65535)
    # Public base of short links (https://sho.rt); defaults to http://host:port.
    base_url: str | None = None
    # Always-valid management key; more are minted with `client keys create`.
    admin_key: str = "dev-admin-key"
    # Keys the code permutation; changing it changes which codes future links get.
    code_secret: str = "dev-code-secret"
    blocked_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Targets on loopback, private, link-local or metadata addresses (localhost, 10.0.0.0/8,
    # 169.254.169.254, [::1], ...) are refused unless this is on (internal deployments).
    allow_private_targets: bool = False
    # Other names this shortener is reached by (links to them would loop).
    own_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    negative_cache_ttl_seconds: int = Field(default=60, ge=1)
    # In-process cache in front of Redis (seconds; 0 turns it off) and its size in links.
    local_cache_ttl_seconds: float = Field(default=30.0, ge=0)
    local_cache_size: int = Field(default=100_000, ge=1)
    # Browser cache for permanent (301/308) redirects; temporary ones are never cached.
    permanent_redirect_max_age: int = Field(default=90, ge=0)
    # Visits: shipped from the server to a Redis stream every interval (or batch), read and
    # written to SQL by the writer processes (python -m url_shortener.writer).
    visit_flush_interval: float = Field(default=0.5, gt=0)
    visit_batch_size: int = Field(default=500, ge=1)
    visit_buffer_limit: int = Field(default=100_000, ge=1)
    # False: the server parses and writes visits to SQL itself (no writer process needed;
    # slower redirects: `make experiment-url_shortener` shows by how much).
    visits_via_stream: bool = True
    visit_stream: str = "url_shortener:visits"
    # Entries (batches) the stream keeps at most: a bound for when no writer runs for long.
    visit_stream_maxlen: int = Field(default=100_000, ge=1)
    # The writer's own HTTP port (/healthz, /readyz, /metrics); 0 lets the OS pick, so any
    # number of writers can run on one host.
    writer_port: int = Field(default=0, ge=0, le=65535)
    # Entries a writer reads at a time, and how long an entry may stay unacknowledged with
    # another writer before it is taken over (that writer is presumed dead).
    writer_batch_entries: int = Field(default=20, ge=1)
    writer_claim_idle_seconds: float = Field(default=30.0, gt=0)
    id_block_size: int = Field(default=1000, ge=1)
    # Seconds Redis is left alone after a failure before it is tried again.
    redis_retry_after: float = Field(default=1.0, ge=0)
    access_log: bool = True
    # Proxies (CIDRs) whose X-Forwarded-For is believed when telling visitors apart.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Link creation limit per client (requests per minute); 0 turns it off.
    create_rate_per_minute: int = Field(default=120, ge=0)
    # Password attempts on protected links per client (per minute); 0 turns it off.
    unlock_rate_per_minute: int = Field(default=10, ge=0)

    @field_validator("blocked_domains", "own_hosts", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def public_base_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def self_hosts(self) -> list[str]:
        host = urlsplit(self.public_base_url).hostname or ""
        return [h for h in [host, *self.own_hosts] if h]

    def checked(self) -> UrlShortenerSettings:
        """Refuse placeholder secrets in production; returns self."""
        self.require_secret("URL_SHORTENER_ADMIN_KEY", self.admin_key)
        self.require_secret("URL_SHORTENER_CODE_SECRET", self.code_secret)
        return self
