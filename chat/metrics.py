"""The chat service's own Prometheus metrics, on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ChatMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.connections = Gauge(
            "chat_connections", "Open WebSocket connections.", registry=registry
        )
        self.rooms = Gauge("chat_rooms_local", "Rooms with a local connection.", registry=registry)
        self.messages = Counter("chat_messages_stored", "Messages stored.", registry=registry)
        self.duplicates = Counter(
            "chat_duplicate_sends", "Sends answered from a stored client_id.", registry=registry
        )
        self.fanout = Counter(
            "chat_deliveries", "Message frames queued to local connections.", registry=registry
        )
        self.gap_fills = Counter(
            "chat_gap_fill_messages", "Messages read from SQL to fill a gap.", registry=registry
        )
        self.slow_consumers = Counter(
            "chat_slow_consumers_closed", "Connections closed: send queue full.", registry=registry
        )
        self.frame_errors = Counter(
            "chat_frame_errors", "Error frames sent, by code.", ["code"], registry=registry
        )
