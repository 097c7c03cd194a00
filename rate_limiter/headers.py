"""The IETF draft headers, draft-ietf-httpapi-ratelimit-headers-09 (March 2025).

Both are Structured Field lists (RFC 9651), one item per policy, named by a string:

    RateLimit-Policy: "per-ip";q=60;w=60, "per-key";q=1000;w=3600
    RateLimit: "per-ip";r=42;t=30

`q` is the quota, `w` the window in seconds, `r` what remains and `t` the seconds until the
quota is back (all integers). The syntax has been stable since draft -08.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from rate_limiter.algorithms import Decision


class Quota(Protocol):
    """What a policy item shows: a `Limit`, or a rule's `Block` (q=0)."""

    @property
    def capacity(self) -> int: ...

    @property
    def period(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """A named limit and its decision for one request."""

    name: str
    limit: Quota
    decision: Decision


def sf_string(value: str) -> str:
    """A Structured Field string: printable ASCII, with quotes and backslashes escaped."""
    safe = "".join(c for c in value if 0x20 <= ord(c) < 0x7F)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def policy_item(name: str, limit: Quota) -> str:
    return f"{sf_string(name)};q={limit.capacity};w={max(1, math.ceil(limit.period))}"


def limit_item(quoted_name: str, decision: Decision) -> str:
    return f"{quoted_name};r={decision.remaining};t={math.ceil(decision.reset_after)}"


def policy_header(applied: Iterable[Applied]) -> str:
    return ", ".join(policy_item(a.name, a.limit) for a in applied)


def ratelimit_header(applied: Iterable[Applied]) -> str:
    return ", ".join(limit_item(sf_string(a.name), a.decision) for a in applied)


def retry_after_seconds(decision: Decision) -> int | None:
    """`Retry-After` for a refusal: whole seconds, at least 1; None when it can never fit."""
    if math.isinf(decision.retry_after):
        return None
    return max(1, math.ceil(decision.retry_after))


def rate_limit_headers(applied: list[Applied]) -> dict[str, str]:
    if not applied:
        return {}
    return {"RateLimit-Policy": policy_header(applied), "RateLimit": ratelimit_header(applied)}
