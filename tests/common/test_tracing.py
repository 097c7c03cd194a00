"""Tracing exports real OTLP/HTTP requests to the configured endpoint (a local receiver)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
from prometheus_client import CollectorRegistry

from common.app import build_app
from common.health import HealthChecks
from common.settings import ServiceSettings


class Receiver(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Receiver.posts.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def test_requests_are_exported_as_spans_when_an_endpoint_is_set() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        settings = ServiceSettings(service_name="traced", otel_exporter_otlp_endpoint=endpoint)
        app = build_app(
            settings,
            title="traced",
            registry=CollectorRegistry(),
            checks=HealthChecks(),
        )

        @app.get("/hello/{name}")
        async def hello(name: str) -> dict[str, str]:
            return {"hello": name}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/hello/world")).status_code == 200
        provider = app.state.tracer_provider
        assert provider is not None
        provider.force_flush()
        provider.shutdown()
        paths = [path for path, _ in Receiver.posts]
        assert "/v1/traces" in paths
        exported = b"".join(body for path, body in Receiver.posts if path == "/v1/traces")
        assert b"traced" in exported  # the service.name resource attribute
        assert b"/hello/{name}" in exported  # the route template as the span name
    finally:
        server.shutdown()


def test_tracing_is_off_without_an_endpoint() -> None:
    app = build_app(
        ServiceSettings(service_name="quiet"),
        title="quiet",
        registry=CollectorRegistry(),
        checks=HealthChecks(),
    )
    assert app.state.tracer_provider is None
