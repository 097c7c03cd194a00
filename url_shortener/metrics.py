"""The shortener's own Prometheus metrics (one registry per app, nothing global)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class VisitMetrics:
    """Visits on their way to SQL: shipped to the stream by a server, written by a writer
    (or by a server while Redis is away), dropped (buffer full, unparsable)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.shipped = Counter(
            "url_shortener_visits_shipped", "Visits handed to the Redis stream.", registry=registry
        )
        self.written = Counter(
            "url_shortener_visits_written", "Visits written to SQL.", registry=registry
        )
        self.dropped = Counter(
            "url_shortener_visits_dropped",
            "Visits dropped: buffer full or unparsable.",
            registry=registry,
        )


class ServerMetrics:
    """The serving process's: Redis state, the in-process cache, visits."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.redis_up = Gauge("url_shortener_redis_up", "1 while Redis answers.", registry=registry)
        self.visits = VisitMetrics(registry)
        self._local_hits = Gauge(
            "url_shortener_local_cache_hits",
            "In-process cache hits since start.",
            registry=registry,
        )
        self._local_misses = Gauge(
            "url_shortener_local_cache_misses", "In-process cache misses.", registry=registry
        )
        self._local_size = Gauge(
            "url_shortener_local_cache_links", "Links held in process.", registry=registry
        )
        self._local_refreshes = Gauge(
            "url_shortener_local_cache_refreshes",
            "In-process entries read again from Redis before they expired (refresh-ahead).",
            registry=registry,
        )

    def watch_local_cache(
        self,
        hits: Callable[[], float],
        misses: Callable[[], float],
        size: Callable[[], float],
        refreshes: Callable[[], float],
    ) -> None:
        """Read the in-process cache's own counters at scrape time (nothing on the hot path)."""
        self._local_hits.set_function(hits)
        self._local_misses.set_function(misses)
        self._local_size.set_function(size)
        self._local_refreshes.set_function(refreshes)


class WriterMetrics:
    """A writer process's: visits written, batches seen again, entries claimed from others."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.visits = VisitMetrics(registry)
        self.duplicates = Counter(
            "url_shortener_writer_duplicate_batches",
            "Batches delivered again and skipped (written before).",
            registry=registry,
        )
        self.claimed = Counter(
            "url_shortener_writer_claimed_entries",
            "Stream entries taken over from a writer that stopped answering.",
            registry=registry,
        )
        self.lag = Gauge(
            "url_shortener_writer_stream_length", "Entries in the visit stream.", registry=registry
        )
