"""The limiter's own Prometheus metrics (one registry per app, nothing global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class LimiterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "rate_limiter_decisions_total",
            "Decisions by rule and outcome (allowed, refused, shadow_refused).",
            ["domain", "rule", "outcome"],
            registry=registry,
        )
        self.shadow_refusals = Counter(
            "rate_limiter_shadow_refusals_total",
            "Requests a shadow-mode rule would have refused.",
            ["domain", "rule"],
            registry=registry,
        )
        self.near_limit = Counter(
            "rate_limiter_near_limit_total",
            "Allowed decisions that left less than (1 - near_limit_ratio) of the quota.",
            ["domain", "rule"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "rate_limiter_backend_errors_total",
            "Backend (Redis) failures, each answered by the failure policy.",
            ["backend"],
            registry=registry,
        )
        self.degraded = Gauge(
            "rate_limiter_degraded",
            "1 while the shared backend is unreachable and the failure policy decides.",
            registry=registry,
        )

    def record(
        self,
        *,
        domain: str,
        rule: str,
        allowed: bool,
        shadow: bool,
        remaining: int,
        limit: int,
        near_ratio: float,
    ) -> None:
        if allowed:
            outcome = "allowed"
        elif shadow:
            outcome = "shadow_refused"
            self.shadow_refusals.labels(domain, rule).inc()
        else:
            outcome = "refused"
        self.decisions.labels(domain, rule, outcome).inc()
        if allowed and limit and (limit - remaining) >= near_ratio * limit:
            self.near_limit.labels(domain, rule).inc()
