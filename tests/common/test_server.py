"""Faults the suite's server bounds, reproduced against a real service process (the rate
limiter: `common.server.serve` and `common.app.build_app` as every service runs them)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support import ServiceProcess

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024  # the server's body limit in these tests
HEADER_TIMEOUT = 1.0


@pytest.fixture
def server(
    service_factory: Callable[..., ServiceProcess], redis_url: str
) -> Iterator[ServiceProcess]:
    yield service_factory(
        "rate_limiter",
        {
            "RATE_LIMITER_REDIS_URL": redis_url,
            "RATE_LIMITER_MAX_BODY_BYTES": str(LIMIT),
            "RATE_LIMITER_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "RATE_LIMITER_LOG_LEVEL": "WARNING",
        },
    )


def _connect(server: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_chunked_flood_gets_413_and_the_connection_is_closed(server: ServiceProcess) -> None:
    """A chunked body never declares its length: once past the limit, the 413 must end the
    connection, or the server reads and throws away whatever the client goes on sending."""
    sock = _connect(server)
    sock.sendall(
        b"POST /api/check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    flood, sent, closed_by_server = 256 * 1024 * 1024, 0, False
    deadline = time.monotonic() + 20
    sock.settimeout(2)
    try:
        while sent < flood and time.monotonic() < deadline:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        # Reset (the server closed with our data unread), or its buffers stay full: it has
        # stopped reading.
        closed_by_server = True
    raw = b""
    try:
        while data := sock.recv(65536):
            raw += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    assert closed_by_server, f"the server read all {sent:,} bytes of the flood"
    # What it took before closing is the limit plus what the sockets' buffers hold.
    assert sent < 32 * 1024 * 1024, sent
    if raw:  # (a reset may overtake the response in the kernel; when it arrived, it is this)
        status, headers, body = _response(raw)
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["type"] == "about:blank#content-too-large"


def test_one_413_problem_whether_declared_or_streamed(server: ServiceProcess) -> None:
    big = b"x" * (LIMIT + 1)

    def streamed() -> Iterator[bytes]:
        yield big

    with httpx.Client(base_url=server.url) as client:
        declared = client.post("/api/check", content=big)
        chunked = client.post("/api/check", content=streamed())
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    for resp in (declared, chunked):
        assert resp.status_code == 413, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["connection"] == "close"
    assert declared.json() == chunked.json()
    assert declared.json()["type"] == "about:blank#content-too-large"


def test_connections_that_never_finish_their_headers_are_closed(server: ServiceProcess) -> None:
    """Idle sockets (nothing sent, or half a request's headers) are closed within 1.5 x the
    header timeout, while complete requests are answered meanwhile."""
    idle = [_connect(server) for _ in range(100)]
    for sock in idle[::2]:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # never the blank line
    # One that finishes its headers just in time is served, then kept alive as usual.
    slow = _connect(server)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    time.sleep(HEADER_TIMEOUT * 0.6)
    slow.sendall(b"Host: t\r\n\r\n")
    assert slow.recv(65536).startswith(b"HTTP/1.1 200")
    start = time.monotonic()
    for sock in idle:
        sock.settimeout(HEADER_TIMEOUT * 1.5 + 2)
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1) == b""  # closed by the server, nothing sent
        sock.close()
    waited = time.monotonic() - start
    assert waited < HEADER_TIMEOUT * 1.5 + 1, waited
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    slow.close()
