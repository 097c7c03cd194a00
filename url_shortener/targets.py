"""Which long URLs may be shortened, and which aliases may be claimed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from url_shortener.codes import is_generated_shape
from url_shortener.errors import InvalidAlias, InvalidTarget

MAX_URL_LENGTH = 2048
ALIAS_RE = re.compile(r"[A-Za-z0-9_-]{3,64}")
RESERVED_ALIASES = frozenset(
    {
        "api", "docs", "redoc", "openapi", "metrics", "healthz", "readyz", "health", "status",
        "static", "assets", "admin", "login", "logout", "favicon", "robots", "qr", "stats",
    }
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
# What a host is after IDNA: labels of letters, digits, '-' and '_' (seen in the wild).
_HOST = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def host_matches(host: str, domains: Iterable[str]) -> bool:
    """True when host is one of the domains or a subdomain of one."""
    return any(host == d or host.endswith("." + d) for d in domains)


def normalize_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Names that always mean this machine or its private network (RFC 6761, RFC 8375, cloud
# metadata services): refused like the addresses themselves.
PRIVATE_NAMES = ("localhost", "localhost.localdomain", "home.arpa", "internal", "local")


def is_private_host(host: str) -> bool:
    """True for loopback, private, link-local (cloud metadata: 169.254.169.254), unique-local,
    unspecified, multicast and reserved addresses, and for names that always mean them.

    Only the URL's text is checked, at creation: a public name that resolves to a private
    address is not (DNS answers change after the check, and the shortener never fetches the
    target itself: the redirect sends the visitor's browser there, not this server)."""
    host = host.strip("[]")
    if host_matches(host, PRIVATE_NAMES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return not ip.is_global or ip.is_multicast


def check_target(
    url: str, *, own_hosts: Iterable[str], blocked: Iterable[str], allow_private: bool = False
) -> str:
    """Validate a long URL; returns it unchanged or raises InvalidTarget naming the reason.
    Private and loopback hosts are refused unless `allow_private` (internal deployments)."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTarget(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if _CONTROL.search(url):
        raise InvalidTarget("The URL contains spaces or control characters.")
    if "\\" in url:
        # Browsers read '\' as '/', Python does not: the two would see different hosts.
        raise InvalidTarget("The URL contains a backslash.")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise InvalidTarget(f"The URL is malformed: {exc}.") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidTarget("Only http and https URLs can be shortened.")
    if "@" in parts.netloc:
        raise InvalidTarget("URLs with embedded credentials (user:password@) are refused.")
    if "%" in parts.netloc:
        raise InvalidTarget("Percent-encoded host names are refused.")
    if not parts.hostname:
        raise InvalidTarget("The URL has no host.")
    host = normalize_host(parts.hostname)
    if not (_HOST.fullmatch(host) or _is_ip(host)):
        raise InvalidTarget(f"'{host[:100]}' is not a valid host name.")
    if port == 0:
        raise InvalidTarget("The URL's port is not valid.")
    if not allow_private and is_private_host(host):
        raise InvalidTarget(
            f"'{host[:100]}' is a loopback, private, link-local or reserved address; "
            "this shortener links to public hosts only (URL_SHORTENER_ALLOW_PRIVATE_TARGETS)."
        )
    if host_matches(host, {normalize_host(h) for h in own_hosts}):
        raise InvalidTarget("Links to this shortener itself are refused (redirect loops).")
    if host_matches(host, {normalize_host(d) for d in blocked}):
        raise InvalidTarget(f"The domain {host} is blocked on this shortener.")
    return url


def check_alias(alias: str) -> str:
    """Validate a custom alias; returns it or raises InvalidAlias."""
    if not ALIAS_RE.fullmatch(alias):
        raise InvalidAlias("An alias is 3 to 64 characters of A-Z, a-z, 0-9, '_' and '-'.")
    if alias.lower() in RESERVED_ALIASES:
        raise InvalidAlias(f"'{alias}' is a reserved word.")
    if is_generated_shape(alias):
        raise InvalidAlias(
            "7-character alphanumeric aliases are reserved for generated codes; "
            "use another length or add '-' or '_'."
        )
    return alias
