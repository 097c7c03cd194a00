"""Who is the client? The peer address, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def parse_networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """CIDRs (or bare addresses) as networks; raises ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str:
    """The client's address.

    `X-Forwarded-For` is only believed when the direct peer is a trusted proxy; then the
    chain is walked from the right, skipping trusted proxies, and the first untrusted
    address is the client (what nginx's real_ip_recursive does). A spoofed header from an
    untrusted peer changes nothing.
    """
    peer = peer or "unknown"
    if not forwarded_for or not trusted:
        return peer
    networks = parse_networks(trusted)
    if not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else peer
