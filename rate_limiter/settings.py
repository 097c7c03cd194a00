"""Settings: `RATE_LIMITER_*` over the shared names (`REDIS_URL`, `LOG_LEVEL`, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.settings import ServiceSettings

EXAMPLE_RULES = Path(__file__).resolve().parent / "rules.example.yaml"


class RateLimiterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RATE_LIMITER_", env_file=".env", extra="ignore")

    service_name: str = "rate_limiter"
    port: int = Field(default=8004, ge=0, le=65535)
    # Envoy's gRPC API (envoy.service.ratelimit.v3.RateLimitService) beside the HTTP one;
    # 8081 is the port Envoy's ratelimit serves it on. 0: a port the OS picks (logged).
    grpc: bool = True
    grpc_port: int = Field(default=8081, ge=0, le=65535)
    # Envoy's LIMIT_RESPONSE_HEADERS_ENABLED: gRPC answers carry RateLimit-Limit, -Remaining
    # and -Reset for the descriptor with the least left (off by default, as in Envoy).
    limit_response_headers: bool = False
    # Envoy's RESPONSE_DYNAMIC_METADATA: gRPC answers carry dynamic_metadata (the request,
    # and the `metadata` of the rules whose descriptors passed); off by default, as in Envoy.
    response_dynamic_metadata: bool = False
    # A YAML file, or a folder of them (one domain each).
    rules: Path = EXAMPLE_RULES
    rules_reload_interval: float = Field(default=1.0, gt=0)
    # Several files may define one domain (Envoy's MERGE_DOMAIN_CONFIG): their top-level
    # descriptors are joined. Off, as in Envoy: a second file for a domain is refused.
    merge_domain_config: bool = False
    # When Redis is unreachable: decide locally (degraded), allow all, or refuse all.
    on_backend_error: Literal["local", "open", "closed"] = "local"
    backend_retry_interval: float = Field(default=0.5, gt=0)
    redis_timeout: float = Field(default=0.5, gt=0)
    # An allowed decision that used this share of the quota or more counts as "near limit".
    near_limit_ratio: float = Field(default=0.8, gt=0, le=1)
    max_cost: int = Field(default=1_000_000, ge=1)
    # Prefetching (GCRA rules): a busy key's tokens taken from Redis in batches that may be
    # spent for `prefetch_ttl` seconds, each batch at most `prefetch_share` of the capacity;
    # such a rule's bound becomes capacity + rate x (span + ttl). Which rules: "rules", those
    # that say `prefetch: true`; "all", every gcra rule but those that say `prefetch: false`;
    # "off", none (every decision asks Redis, whatever the rules say). A ttl of 0 is off too.
    prefetch: Literal["off", "rules", "all"] = "rules"
    prefetch_ttl: float = Field(default=0.05, ge=0, le=10)
    prefetch_share: float = Field(default=0.01, gt=0, le=1)
