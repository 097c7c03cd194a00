"""Who is the client? The peer address, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """`["10.0.0.0/8", "127.0.0.1"]` -> networks; a bad entry is a ValueError at start-up."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


@lru_cache(maxsize=8192)
def parse_ip(text: str) -> Address | None:
    """An address from a header hop: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:8080`; None if garbage."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@lru_cache(maxsize=8192)
def _trusted(ip: Address, networks: tuple[Network, ...]) -> bool:
    return any(ip in net for net in networks)


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str | None:
    """The client's address.

    `X-Forwarded-For` is believed only when the direct peer is a trusted proxy; then the
    chain is walked from the right, hop by hop, while the hops are trusted proxies; the first
    untrusted address is the client (nginx's real_ip_recursive). A spoofed header from an
    untrusted peer changes nothing, and garbage in the chain stops the walk.
    """
    if peer is None or not trusted or not forwarded_for:
        return peer
    current = parse_ip(peer)
    if current is None or not _trusted(current, trusted):
        return peer
    for hop in reversed(forwarded_for.split(",")):
        if not hop.strip():
            continue
        ip = parse_ip(hop)
        if ip is None:
            break
        current = ip
        if not _trusted(ip, trusted):
            break
    return str(current)
