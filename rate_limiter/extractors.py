"""What a request is limited *by*: small functions from a request view to a descriptor value.

Each returns a string, or None when the request has no such thing (no API key, no user);
a rule whose descriptor is missing does not apply to that request.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """`["10.0.0.0/8", "127.0.0.1"]` -> networks; a bad entry is a ValueError at start-up."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


@functools.lru_cache(maxsize=8192)
def _ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:8080"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=8192)
def _trusted(ip: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(ip in net for net in networks)


class RequestView:
    """The parts of an ASGI scope the extractors read, decoded once."""

    def __init__(self, scope: Any, trusted: tuple[IPNetwork, ...] = ()) -> None:
        self.scope = scope
        self.trusted = trusted

    @cached_property
    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self.scope.get("headers", ()):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            out[key] = f"{out[key]},{text}" if key in out else text
        return out

    @property
    def method(self) -> str:
        return str(self.scope.get("method", "WS")) if self.scope["type"] == "http" else "WS"

    @property
    def path(self) -> str:
        return str(self.scope.get("path", "/"))

    def _is_trusted(self, ip: IPAddress) -> bool:
        return _trusted(ip, self.trusted)

    @cached_property
    def client_ip(self) -> str | None:
        """The peer address; `X-Forwarded-For` is believed only hop by hop from trusted
        proxies, read from the right, so a client cannot spoof its way past the limit."""
        client = self.scope.get("client")
        if client and not self.trusted:
            return str(client[0])  # no proxies to believe: the peer, as the server gave it
        peer = _ip(client[0]) if client else None
        if peer is None:
            return None
        if not self._is_trusted(peer):
            return str(peer)
        chain = [p for p in self.headers.get("x-forwarded-for", "").split(",") if p.strip()]
        current = peer
        for hop in reversed(chain):
            ip = _ip(hop)
            if ip is None:
                break  # garbage from beyond the last trusted proxy: stop believing
            current = ip
            if not self._is_trusted(ip):
                break
        return str(current)


Extractor = Callable[[RequestView], str | None]


def client_ip(view: RequestView) -> str | None:
    """The client's address (see `RequestView.client_ip` for the trusted-proxy rule)."""
    return view.client_ip


def header(name: str) -> Extractor:
    """The value of a request header, e.g. `header("x-tenant")`."""
    lowered = name.lower()

    def extract(view: RequestView) -> str | None:
        return view.headers.get(lowered) or None

    extract.__name__ = f"header_{lowered}"
    return extract


def api_key(view: RequestView) -> str | None:
    """`X-API-Key`, else a bearer token (limited by the key, never stored in clear)."""
    key = view.headers.get("x-api-key")
    if not key:
        auth = view.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    if not key:
        return None
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:32]


def route(view: RequestView) -> str:
    """`METHOD /path` (the raw path; rules that match templates share one counter per path)."""
    return f"{view.method} {view.path}"


def user(view: RequestView) -> str | None:
    """The authenticated user set by an authentication middleware (`scope["user"]`)."""
    found = view.scope.get("user")
    if found is None or not getattr(found, "is_authenticated", False):
        return None
    ident = getattr(found, "identity", None) or getattr(found, "display_name", None)
    return str(ident) if ident else None
