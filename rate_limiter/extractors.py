"""What a request is limited *by*: small functions from a request view to a descriptor value.

Each returns a string, or None when the request has no such thing (no API key, no user);
a rule whose descriptor is missing does not apply to that request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from common.net import Network, parse_networks
from common.net import client_ip as _client_ip

IPNetwork = Network
__all__ = ["client_ip", "header", "parse_networks", "route", "user"]


class RequestView:
    """The parts of an ASGI scope the extractors read, each decoded at most once, and only
    when an extractor asks (the middleware builds one per request: it must be cheap)."""

    __slots__ = ("_client_ip", "_headers", "method", "path", "scope", "trusted")

    def __init__(
        self, scope: Any, trusted: tuple[IPNetwork, ...] = (), method: str | None = None
    ) -> None:
        self.scope = scope
        self.trusted = trusted
        if method is None:
            method = scope.get("method", "WS") if scope["type"] == "http" else "WS"
        self.method: str = method
        self.path: str = scope.get("path", "/")
        self._headers: dict[str, str] | None = None
        self._client_ip: str | bool | None = False  # False: not worked out yet

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; repeated headers joined with commas."""
        if self._headers is None:
            out: dict[str, str] = {}
            for name, value in self.scope.get("headers", ()):
                key = name.decode("latin-1").lower()
                text = value.decode("latin-1")
                out[key] = f"{out[key]},{text}" if key in out else text
            self._headers = out
        return self._headers

    @property
    def client_ip(self) -> str | None:
        """The peer address; `X-Forwarded-For` only hop by hop from trusted proxies
        (`common.net.client_ip`), so a client cannot spoof its way past the limit."""
        if self._client_ip is False:
            client = self.scope.get("client")
            peer = str(client[0]) if client else None
            if self.trusted and peer:
                forwarded = self.headers.get("x-forwarded-for")
                self._client_ip = _client_ip(peer, forwarded, self.trusted)
            else:  # without trusted proxies no header can change the answer
                self._client_ip = peer
        return self._client_ip  # type: ignore[return-value]


Extractor = Callable[[RequestView], str | None]


UNKNOWN_CLIENT = "unknown"
_warned_unknown_client = False  # log once per process, not once per request


def client_ip(view: RequestView) -> str:
    """The client's address (see `RequestView.client_ip` for the trusted-proxy rule).

    A server that gives no peer address (`scope["client"]` is None) must not make requests
    unlimited: they share one key, `unknown`, and are limited together (logged once)."""
    found = view.client_ip
    if found is not None:
        return found
    global _warned_unknown_client
    if not _warned_unknown_client:
        _warned_unknown_client = True
        structlog.get_logger("rate_limiter.extractors").warning(
            "client_address_unknown", using=UNKNOWN_CLIENT, path=view.path
        )
    return UNKNOWN_CLIENT


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
