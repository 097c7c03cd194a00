"""Circuit breakers per provider, their state in Redis so every worker process shares it
(closed -> open after N failures in a row -> half-open after `reset`: one probe call, which
closes it again or reopens it). The API reads the same hashes for /api/providers and
/metrics."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis as sync_redis

SCRIPT = (Path(__file__).parent / "lua" / "breaker.lua").read_text()
STATES = ("closed", "open", "half_open")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    state: BreakerState
    wait_seconds: float


def key(provider: str) -> str:
    return f"{{breaker:{provider}}}"


def _verdict(reply: list[Any]) -> Verdict:
    state = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    return Verdict(bool(int(reply[0])), BreakerState(state), int(reply[2]) / 1000)


class Breakers:
    """The worker side: ask before a call, report after it."""

    def __init__(
        self,
        redis: sync_redis.Redis,
        *,
        failures: int,
        reset_seconds: float,
        enabled: bool = True,
    ) -> None:
        self._script = redis.register_script(SCRIPT)
        self._args = [failures, int(reset_seconds * 1000)]
        self.enabled = enabled

    def _run(self, op: str, provider: str) -> Verdict:
        if not self.enabled:
            return Verdict(True, BreakerState.CLOSED, 0.0)
        return _verdict(self._script(keys=[key(provider)], args=[op, *self._args]))

    def allow(self, provider: str) -> Verdict:
        return self._run("allow", provider)

    def success(self, provider: str) -> Verdict:
        return self._run("success", provider)

    def failure(self, provider: str) -> Verdict:
        return self._run("failure", provider)


def describe(fields: dict[Any, Any]) -> dict[str, Any]:
    """A breaker hash (as redis returns it) as the API shows it."""
    decoded = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    opened = decoded.get("opened_ms")
    return {
        "state": decoded.get("state", "closed"),
        "failures": int(decoded.get("failures", 0)),
        "opened_at": int(opened) / 1000 if opened else None,
        "opened_total": int(decoded.get("opened_total", 0)),
    }
