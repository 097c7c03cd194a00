"""Server-side request forgery guard for webhooks: the target's host is resolved and every
address it resolves to must be public (not loopback, private, link-local, multicast or
reserved). The check happens at send time, after DNS, so a name that later points inside
the network is refused too."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class TargetRefused(ValueError):
    pass


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise TargetRefused unless `url` is http(s) and resolves only to public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("webhook URLs must be http(s) with a host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            raise TargetRefused(f"{parts.hostname} resolves to non-public {address}")
