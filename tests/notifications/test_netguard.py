"""The webhook SSRF guard: private targets refused after DNS, and the connection pinned to
the address that was checked (one resolution per connection: no DNS rebinding window).
Requests go to a real HTTP receiver on loopback; a test's own resolver maps made-up names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from notifications.channels import Message, Outcome, Webhook
from notifications.netguard import TargetRefused, check_url


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append({"path": self.path, "host": self.headers["host"], "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Rebinding:
    """A DNS server that answers `first` once, then `later` (the rebinding attack)."""

    def __init__(self, first: str, later: str) -> None:
        self.answers = [first, later]
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return [self.answers[min(len(self.calls) - 1, 1)]]


def message(url: str) -> Message:
    return Message(
        delivery_id="d1",
        notification_id="n1",
        category="news",
        user={"id": "u1", "webhook_url": url},
        content={"text": "hi"},
    )


def test_the_connection_goes_to_the_checked_address(receiver: Receiver) -> None:
    dns = Rebinding("127.0.0.1", "192.0.2.1")  # later: an address nothing answers on
    hook = Webhook("secret", 2.0, allow_private=True, resolver=dns)
    url = f"http://hooks.example.test:{receiver.port}/in"
    result = hook.send(message(url))
    assert result.outcome == Outcome.DELIVERED, result
    assert dns.calls == ["hooks.example.test"]  # resolved once, and that answer was used
    (got,) = receiver.got
    # The name stays the request's: Host header (and, on https, SNI and the certificate).
    assert got["path"] == "/in" and got["host"] == f"hooks.example.test:{receiver.port}"


def test_a_name_rebound_to_loopback_after_the_check_never_reaches_it(receiver: Receiver) -> None:
    dns = Rebinding("93.184.215.14", "127.0.0.1")  # public to the check, loopback after
    hook = Webhook("secret", 0.5, allow_private=False, resolver=dns)
    result = hook.send(message(f"http://rebind.example.test:{receiver.port}/in"))
    assert result.outcome == Outcome.TRANSIENT  # the public address does not answer here
    assert dns.calls == ["rebind.example.test"]
    assert receiver.got == []


def test_a_name_for_loopback_is_refused_unless_private_targets_are_allowed(
    receiver: Receiver,
) -> None:
    url = f"http://localhost:{receiver.port}/in"
    refused = Webhook("secret", 2.0, allow_private=False).send(message(url))
    assert refused.outcome == Outcome.PERMANENT and "target refused" in str(refused.error)
    assert "localhost resolves to non-public" in str(refused.error)
    assert receiver.got == []
    mapped = Webhook("secret", 2.0, allow_private=False, resolver=lambda h, p: ["127.0.0.1"])
    assert mapped.send(message(url.replace("localhost", "a.example.test"))).outcome == (
        Outcome.PERMANENT
    )
    assert receiver.got == []
    # Allowed (tests, development): the same name reaches the receiver.
    assert Webhook("secret", 2.0, allow_private=True).send(message(url)).ok
    assert len(receiver.got) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/hook",
        "ftp://example.com/hook",
    ],
)
def test_private_and_loopback_targets_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        check_url(url, allow_private=False)


def test_private_targets_pass_when_allowed() -> None:
    assert check_url("http://127.0.0.1:9/hook", allow_private=True) == ["127.0.0.1"]


def test_a_public_address_passes() -> None:
    assert check_url("http://93.184.215.14/hook", allow_private=False) == ["93.184.215.14"]
