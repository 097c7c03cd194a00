"""Server-side request forgery guard for webhooks: the target's host is resolved once, every
address it resolves to must be public (not loopback, private, link-local - the cloud
metadata address -, multicast or reserved), and the connection goes to exactly the address
that was checked. Resolving and connecting in one step closes the DNS rebinding window (a
name that answers a public address to the check and a private one to the connect).

The check runs inside the HTTP client's network backend (`PinnedBackend`), at connect time;
the request keeps the original name for its Host header and for TLS (SNI and the
certificate check), since httpcore takes those from the URL, not from the socket."""

from __future__ import annotations

import ipaddress
import socket
import typing
from collections.abc import Callable
from urllib.parse import urlsplit

import httpcore
import httpx

# (host, port) -> the addresses it resolves to, in the resolver's order.
Resolver = Callable[[str, int], list[str]]


class TargetRefused(ValueError):
    pass


def resolve(host: str, port: int) -> list[str]:
    """The system resolver's addresses for `host`, each once."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


def checked_addresses(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = resolve
) -> list[str]:
    """Resolve `host` once; raise TargetRefused unless every address may be reached."""
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise TargetRefused(f"{host} resolves to no address")
    for address in addresses if not allow_private else ():
        if not is_public(address):
            raise TargetRefused(f"{host} resolves to non-public {address}")
    return addresses


def target(url: str) -> tuple[str, int]:
    """The (host, port) of an http(s) URL; TargetRefused for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("webhook URLs must be http(s) with a host")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def check_url(url: str, *, allow_private: bool, resolver: Resolver = resolve) -> list[str]:
    """The addresses `url`'s host may be reached at; TargetRefused if it may not."""
    host, port = target(url)
    return checked_addresses(host, port, allow_private=allow_private, resolver=resolver)


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to addresses checked in the same call."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        self.allow_private, self.resolver = allow_private, resolver
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = checked_addresses(
            host, port, allow_private=self.allow_private, resolver=self.resolver
        )
        failure: Exception | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise TargetRefused("webhooks never go to a unix socket")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport over a `PinnedBackend`; no proxies from the environment (a proxy
    would do its own resolving)."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = resolve) -> None:
        super().__init__(trust_env=False)
        # httpx has no parameter for httpcore's network backend: the pool is rebuilt with it.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=PinnedBackend(allow_private=allow_private, resolver=resolver),
            max_connections=100,  # httpx's own defaults
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )
