"""The limiter's own Prometheus metrics (one registry per app, nothing global)."""

from __future__ import annotations

from typing import Any

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
        self.refunds = Counter(
            "rate_limiter_refunds_total",
            "Decisions that gave units back because another rule of the same check (or "
            "request) refused it.",
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
        self.prefetch_fetches = Counter(
            "rate_limiter_prefetch_fetches_total",
            "Calls to Redis for a batch of tokens (prefetching on); the rest of the decisions "
            "were made in the process.",
            registry=registry,
        )
        # labels() looks the child up under a lock on every call; the hot path keeps them.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) >= 10_000:  # a runaway label set: stop caching, still count
                return metric.labels(*labels)
            child = self._children[key] = metric.labels(*labels)
        return child

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
            self._child(self.shadow_refusals, domain, rule).inc()
        else:
            outcome = "refused"
        self._child(self.decisions, domain, rule, outcome).inc()
        if allowed and limit and (limit - remaining) >= near_ratio * limit:
            self._child(self.near_limit, domain, rule).inc()
