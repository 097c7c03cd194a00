"""The limiter's own Prometheus metrics (one registry per app, nothing global)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

ENVOY_STATS = ("total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode")


def envoy_labels(stat_key: str) -> tuple[str, str, str]:
    """`domain.key1.key2...` split as the Prometheus mapping Envoy's ratelimit ships
    (its statsd exporter's default mapper) splits it: the domain, then the first two keys."""
    parts = stat_key.split(".")
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""


class EnvoyStats(Collector):
    """Envoy ratelimit's per-limit counters, `ratelimit.service.rate_limit.<domain>.<key>.
    <stat>`, under the names its Prometheus mapping gives them
    (`ratelimit_service_rate_limit_total_hits{domain, key1, key2}`), so Envoy users'
    dashboards read this service unchanged. Counted in hits (a request's cost)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, str], float] = {}
        registry.register(self)

    def add(self, stat_key: str, stat: str, hits: int) -> None:
        key = (stat_key, stat)
        self._counts[key] = self._counts.get(key, 0) + hits

    def record(
        self,
        stat_key: str,
        *,
        hits: int,
        allowed: bool,
        shadow: bool,
        remaining: int,
        limit: int,
        near_ratio: float,
    ) -> None:
        if not stat_key:
            return
        self.add(stat_key, "total_hits", hits)
        if not allowed:
            self.add(stat_key, "over_limit", hits)
            if shadow:
                self.add(stat_key, "shadow_mode", hits)
            return
        self.add(stat_key, "within_limit", hits)
        if limit and limit - remaining > math.floor(limit * near_ratio):
            self.add(stat_key, "near_limit", hits)

    def value(self, stat_key: str, stat: str) -> float:
        return self._counts.get((stat_key, stat), 0)

    def collect(self) -> Iterator[Metric]:
        families = {
            stat: Metric(
                f"ratelimit_service_rate_limit_{stat}",
                f"Envoy ratelimit's {stat} per limit (ratelimit.service.rate_limit.*.{stat}).",
                "counter",
            )
            for stat in ENVOY_STATS
        }
        for (stat_key, stat), count in list(self._counts.items()):
            domain, key1, key2 = envoy_labels(stat_key)
            labels = {"domain": domain, "key1": key1, "key2": key2}
            families[stat].add_sample(f"ratelimit_service_rate_limit_{stat}", labels, count)
        yield from families.values()


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
        self.envoy = EnvoyStats(registry)
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
