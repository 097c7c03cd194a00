"""Descriptor extractors, above all the trusted-proxy rule for client addresses."""

from __future__ import annotations

from typing import Any

import pytest

from rate_limiter.extractors import (
    RequestView,
    api_key,
    client_ip,
    header,
    parse_networks,
    route,
    user,
)

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


def view(peer: str, xff: str | None = None, **extra: Any) -> RequestView:
    headers = [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    headers += [(k.encode(), v.encode()) for k, v in extra.pop("headers", {}).items()]
    scope = {"type": "http", "method": "POST", "path": "/x", "client": (peer, 1234),
             "headers": headers, **extra}  # fmt: skip
    return RequestView(scope, TRUSTED)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        # A spoofed header from an untrusted peer changes nothing.
        ("203.0.113.9", "1.1.1.1", "203.0.113.9"),
        ("203.0.113.9", "1.1.1.1, 10.0.0.1", "203.0.113.9"),
        # From a trusted proxy: the rightmost untrusted hop is the client.
        ("10.1.2.3", "198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # 6.6.6.6 is client-supplied
        ("10.1.2.3", "198.51.100.7, 10.9.9.9", "198.51.100.7"),  # two trusted proxies
        ("127.0.0.1", "198.51.100.7:5555", "198.51.100.7"),
        ("10.1.2.3", "garbage, 10.9.9.9", "10.9.9.9"),  # stop at what cannot be an address
        ("10.1.2.3", "", "10.1.2.3"),
        ("10.1.2.3", "10.2.2.2", "10.2.2.2"),  # all trusted: the leftmost
        ("fd00::1", "[2001:db8::5]:443", "2001:db8::5"),
    ],
)
def test_client_ip_honours_forwarded_for_only_from_trusted_proxies(
    peer: str, xff: str | None, expected: str
) -> None:
    assert client_ip(view(peer, xff)) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    scope = {
        "type": "http",
        "client": ("10.0.0.1", 1),
        "headers": [(b"x-forwarded-for", b"1.2.3.4")],
    }
    assert client_ip(RequestView(scope)) == "10.0.0.1"
    # No peer address: one shared key, limited together, never "no key" (= unlimited).
    assert client_ip(RequestView({"type": "http", "headers": []})) == "unknown"
    assert client_ip(RequestView({"type": "http", "headers": [], "client": None})) == "unknown"


def test_bad_cidr_fails_at_start() -> None:
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.0/33"])


def test_api_key_header_and_bearer_are_hashed() -> None:
    a = api_key(view("1.1.1.1", headers={"x-api-key": "secret"}))
    b = api_key(view("1.1.1.1", headers={"authorization": "Bearer secret"}))
    assert a == b and a is not None and "secret" not in a
    assert api_key(view("1.1.1.1")) is None
    assert api_key(view("1.1.1.1", headers={"authorization": "Basic eDp5"})) is None


def test_route_header_and_user() -> None:
    v = view("1.1.1.1", headers={"X-Tenant": "acme"})
    assert route(v) == "POST /x"
    assert header("x-tenant")(v) == "acme" and header("x-missing")(v) is None

    class U:
        is_authenticated = True
        identity = "alice"

    assert user(view("1.1.1.1", user=U())) == "alice"
    assert user(view("1.1.1.1")) is None
