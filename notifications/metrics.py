"""The service's own Prometheus metrics, on the app's registry. Provider breaker states and
delivery counts live in Redis and SQL (workers change them), so a background loop in the
API refreshes these gauges from there."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from notifications.breaker import STATES


class NotificationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "notifications_accepted",
            "Notifications accepted (idempotent replays not counted).",
            ["priority"],
            registry=registry,
        )
        self.breaker_state = Gauge(
            "notifications_provider_circuit_state",
            "1 for the provider's current circuit state (closed, open, half_open).",
            ["provider", "state"],
            registry=registry,
        )
        self.breaker_opened = Gauge(
            "notifications_provider_circuit_opened",
            "Times the provider's circuit has opened (from Redis).",
            ["provider"],
            registry=registry,
        )
        self.deliveries = Gauge(
            "notifications_deliveries",
            "Deliveries by channel and status (from SQL).",
            ["channel", "status"],
            registry=registry,
        )

    def set_breaker(self, provider: str, state: str, opened_total: int) -> None:
        for name in STATES:
            self.breaker_state.labels(provider, name).set(1 if name == state else 0)
        self.breaker_opened.labels(provider).set(opened_total)
