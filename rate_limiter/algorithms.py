"""The algorithms, as pure state transitions: what a limit is, what a decision says.

Each algorithm is a function `step(state, now_us, limit, cost, lease) -> (state, Decision)`
over a small dict. The in-memory backend runs these directly; the Redis backend runs the
Lua twin of each (`lua/<algorithm>.lua`), which follows the same lines one for one. All times
inside are integer microseconds; a `Decision` reports seconds.

A `cost` of 0 is a peek: it reports the state without consuming anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any, NamedTuple

US = 1_000_000

# Envoy's units (and the later additions), in seconds.
UNITS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 7 * 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}


class Algorithm(StrEnum):
    GCRA = "gcra"
    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    SLIDING_LOG = "sliding_log"
    CONCURRENCY = "concurrency"

    @classmethod
    def parse(cls, name: str) -> Algorithm:
        """Accept the canonical names and a few common aliases (`token_bucket` is GCRA)."""
        aliases = {
            "token_bucket": cls.GCRA,
            "leaky_bucket": cls.GCRA,
            "sliding_window_counter": cls.SLIDING_WINDOW,
            "moving_window": cls.SLIDING_LOG,
        }
        key = name.strip().lower().replace("-", "_")
        if key in aliases:
            return aliases[key]
        return cls(key)


# Envoy's requests_per_unit is a uint32; the scripts' arithmetic is exact well beyond it.
MAX_RATE = 2**32 - 1
# The algorithms that store one entry per unit (a timestamp, a lease unit) and their bound.
PER_UNIT = frozenset({Algorithm.SLIDING_LOG, Algorithm.CONCURRENCY})
MAX_PER_UNIT = 10_000
# What a refused concurrency lease is told to wait at most (see `concurrency`).
CONCURRENCY_RETRY_US = US


@dataclass(frozen=True)
class Limit:
    """`rate` per `period` seconds. For GCRA `burst` is the bucket size (default `rate`);
    for the concurrency limiter `rate` is the number of leases and `period` their lifetime.
    `count_refused=True` makes refused requests use up quota too (off by default).
    `prefetch` (GCRA only): True, this limit's busy keys are decided from batches of tokens
    when the backend prefetches (`PrefetchBackend`); False, never (every decision asks
    Redis); None, the backend's default."""

    rate: int
    period: float = 1.0
    algorithm: Algorithm = Algorithm.GCRA
    burst: int | None = None
    count_refused: bool = False
    prefetch: bool | None = None

    def __post_init__(self) -> None:
        if self.rate < 1:
            raise ValueError("rate must be at least 1")
        if self.period <= 0:
            raise ValueError("period must be positive")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.prefetch and self.algorithm is not Algorithm.GCRA:
            raise ValueError("prefetch applies to the gcra (token bucket) algorithm")
        if max(self.rate, self.burst or 0) > MAX_RATE:
            raise ValueError(f"rate and burst must be at most {MAX_RATE}")
        if self.algorithm in PER_UNIT and self.rate > MAX_PER_UNIT:
            # One sorted-set member per unit: a single call of cost 100,000 would keep Redis
            # busy for half a second (other clients get BUSY, this one times out).
            raise ValueError(
                f"{self.algorithm.value} keeps one entry per unit: at most {MAX_PER_UNIT}"
                " (for bigger limits, sliding_window or gcra)"
            )

    @cached_property
    def capacity(self) -> int:
        """The most a key can take at once. (Cached, as `spec` is: it is read on every
        decision, and an enum member's lookup costs as much as the rest of it.)"""
        if self.algorithm is Algorithm.GCRA and self.burst is not None:
            return self.burst
        return self.rate

    @cached_property
    def period_us(self) -> int:
        return round(self.period * US)

    @cached_property
    def spec(self) -> bytes:
        """The limit as the Lua scripts take it: one pre-encoded argument, made once."""
        refused = 1 if self.count_refused else 0
        return f"{self.rate} {self.period_us} {self.capacity} {refused}".encode()

    @classmethod
    def per(cls, unit: str, rate: int, **kwargs: Any) -> Limit:
        return cls(rate, float(UNITS[unit]), **kwargs)

    @classmethod
    def per_second(cls, rate: int, **kwargs: Any) -> Limit:
        return cls(rate, 1.0, **kwargs)

    @classmethod
    def per_minute(cls, rate: int, **kwargs: Any) -> Limit:
        return cls(rate, 60.0, **kwargs)

    @classmethod
    def per_hour(cls, rate: int, **kwargs: Any) -> Limit:
        return cls(rate, 3600.0, **kwargs)

    @classmethod
    def per_day(cls, rate: int, **kwargs: Any) -> Limit:
        return cls(rate, 86400.0, **kwargs)


class Decision(NamedTuple):
    """The verdict on one request. `retry_after` is 0 when allowed and `math.inf` when the
    cost can never fit (above capacity). `reset_after` is when the key is back to full.
    `at_us` (when it was decided, by the deciding backend's clock: Redis `TIME`, in µs) and,
    for GCRA, `position` (the key's running total of tokens taken, these included: where
    they sit in its debt) are what a refund needs to work out how much the key still holds.
    (A named tuple: immutable and the cheapest thing to build on the hot path.)"""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    lease: str | None = None
    degraded: bool = False
    at_us: int = 0
    position: int = 0

    @classmethod
    def from_us(
        cls,
        allowed: int | bool,
        limit: int,
        remaining: int,
        reset_after_us: int,
        retry_after_us: int,
        at_us: int = 0,
        position: int = 0,
        *,
        lease: str | None = None,
    ) -> Decision:
        raw = (int(allowed), int(limit), int(remaining), reset_after_us, retry_after_us)
        return decision_from_reply((*raw, at_us, position), lease)


_new_tuple = tuple.__new__


def decision_from_reply(reply: Sequence[int], lease: str | None = None) -> Decision:
    """A decision from a script's reply (a `Raw`, the time it was decided and its position):
    the one place the microsecond figures become seconds. Built without the named tuple's
    Python-level `__new__` (a frame per decision on the hot path)."""
    allowed, limit, remaining, reset_after_us, retry_after_us, at_us, position = reply
    return _new_tuple(  # type: ignore[no-any-return]
        Decision,
        (
            allowed == 1,
            limit,
            remaining if remaining > 0 else 0,
            reset_after_us / US,
            math.inf if retry_after_us < 0 else retry_after_us / US,
            lease,
            False,
            at_us,
            position,
        ),
    )


# (allowed, limit, remaining, reset_after_us, retry_after_us); -1 retry means never.
Raw = tuple[int, int, int, int, int]
State = dict[str, Any]
Step = Callable[[State, int, Limit, int, str | None], tuple[State | None, Raw]]
# A step returns the new state, or None to leave the stored state untouched.


def ceil_up(x: float) -> int:
    """Rounded up, forgiving float noise (a microsecond is not added for 1e-10 of one)."""
    return math.ceil(x - 1e-9) if x > 0 else 0


def gcra(
    state: State, now: int, limit: Limit, cost: int, lease: str | None
) -> tuple[State | None, Raw]:
    """GCRA in its token form: `d` is the debt in tokens, paid back at one per `T` µs.

    Keeping the debt in tokens (not a theoretical arrival time) is what lets a limit change
    keep what was already consumed: only the refill speed and the capacity change."""
    cap = limit.capacity
    t_us = limit.period_us / limit.rate
    d, a, created = 0.0, 0, now  # `a`: tokens taken in all (see `refund`), since `created`
    if state:
        d = max(0.0, float(state["d"]) - max(0, now - int(state["t"])) / t_us)
        a, created = int(state.get("a", 0)), int(state.get("c", 0))
    if cost > cap:
        return None, (0, cap, math.floor(cap - d), ceil_up(d * t_us), -1)
    if d + cost <= cap:
        if cost == 0:
            return None, (1, cap, math.floor(cap - d), ceil_up(d * t_us), 0)
        d += cost
        taken = {"d": d, "t": now, "a": a + cost, "c": created}
        return taken, (1, cap, math.floor(cap - d), ceil_up(d * t_us), 0)
    retry = ceil_up((d + cost - cap) * t_us)
    new_state = None
    if limit.count_refused:
        d = max(d, min(float(cap), d + cost))  # (never lower: the burst may have been lowered)
        new_state = {"d": d, "t": now, "a": a + cost, "c": created}
    return new_state, (0, cap, math.floor(cap - d), ceil_up(d * t_us), retry)


def fixed_window(
    state: State, now: int, limit: Limit, cost: int, lease: str | None
) -> tuple[State | None, Raw]:
    """A counter per calendar window (aligned to the epoch, like Envoy's). With
    `count_refused` (Envoy's counting) every hit counts, past the limit too, as Envoy's
    counter does: a check of cost 0 (Envoy's hits_addend 0) is refused once it is over."""
    p = limit.period_us
    window = now // p
    count = int(state["c"]) if state and int(state["w"]) == window else 0
    reset = (window + 1) * p - now
    if cost <= limit.rate and count + cost <= limit.rate:
        if cost == 0:
            return None, (1, limit.rate, limit.rate - count, reset if count else 0, 0)
        count += cost
        return {"w": window, "c": count}, (1, limit.rate, limit.rate - count, reset, 0)
    new_state = None
    if limit.count_refused and cost:
        count += cost
        new_state = {"w": window, "c": count}
    retry = -1 if cost > limit.rate else reset  # (-1: this cost never fits)
    return new_state, (0, limit.rate, max(0, limit.rate - count), reset if count else 0, retry)


def sliding_window(
    state: State, now: int, limit: Limit, cost: int, lease: str | None
) -> tuple[State | None, Raw]:
    """Sliding-window counter: this window's count plus the previous one's, weighted by how
    much of it still overlaps the sliding window (Cloudflare's approximation)."""
    p, rate = limit.period_us, limit.rate
    window = now // p
    cur = prev = 0
    if state:
        w = int(state["w"])
        if w == window:
            cur, prev = int(state["c"]), int(state["p"])
        elif w == window - 1:
            prev = int(state["c"])
    into = now - window * p
    est = prev * (p - into) / p + cur
    remaining = math.floor(rate - est)
    reset = (window + 2) * p - now if cur else ((window + 1) * p - now if prev else 0)
    if cost > rate:
        return None, (0, rate, remaining, reset, -1)
    if est + cost <= rate:
        if cost == 0:
            return None, (1, rate, remaining, reset, 0)
        cur += cost
        est += cost
        reset = (window + 2) * p - now
        return {"w": window, "c": cur, "p": prev}, (1, rate, math.floor(rate - est), reset, 0)
    if cur + cost > rate:
        # Wait for the next window, then for this window's weight to fall far enough.
        need = 1 - (rate - cost) / cur if cur else 0.0
        retry = (window + 1) * p - now + ceil_up(max(0.0, need) * p)
    else:
        need = 1 - (rate - cost - cur) / prev
        retry = window * p + ceil_up(need * p) - now
    new_state = None
    if limit.count_refused:
        cur = min(rate, cur + cost)
        new_state = {"w": window, "c": cur, "p": prev}
    return new_state, (0, rate, remaining, reset, max(1, retry))


def sliding_log(
    state: State, now: int, limit: Limit, cost: int, lease: str | None
) -> tuple[State | None, Raw]:
    """Every admitted unit's timestamp, kept for one period: exact, and O(rate) memory."""
    p, rate = limit.period_us, limit.rate
    log: list[int] = [t for t in (state.get("log", []) if state else []) if t > now - p]
    n = len(log)
    reset = log[-1] + p - now if log else 0
    if cost > rate:
        return {"log": log}, (0, rate, rate - n, reset, -1)
    if n + cost <= rate:
        if cost == 0:
            return {"log": log}, (1, rate, rate - n, reset, 0)
        log.extend([now] * cost)
        return {"log": log}, (1, rate, rate - n - cost, p, 0)
    retry = log[n + cost - rate - 1] + p - now
    if limit.count_refused:
        log = (log + [now] * cost)[-rate:]
    return {"log": log}, (0, rate, max(0, rate - n), reset, retry)


def concurrency(
    state: State, now: int, limit: Limit, cost: int, lease: str | None
) -> tuple[State | None, Raw]:
    """Leases: `rate` may be held at once; each expires `period` after it was taken, so a
    holder that dies without releasing frees its slot anyway."""
    rate, ttl = limit.rate, limit.period_us
    leases: dict[str, int] = {
        k: exp for k, exp in (state.get("leases", {}) if state else {}).items() if exp > now
    }
    n = len(leases)
    reset = max(leases.values()) - now if leases else 0
    if cost > rate:
        return {"leases": leases}, (0, rate, rate - n, reset, -1)
    if n + cost <= rate:
        if cost == 0 or lease is None:
            return {"leases": leases}, (1, rate, rate - n, reset, 0)
        for i in range(1, cost + 1):
            leases[f"{lease}#{i}"] = now + ttl
        return {"leases": leases}, (1, rate, rate - n - cost, ttl, 0)
    # A slot frees when its holder releases it, which nobody can foresee, or at the latest
    # when the lease expires: retry in a second, or sooner if enough leases expire sooner.
    ordered = sorted(leases.values())
    retry = min(ordered[n + cost - rate - 1] - now, CONCURRENCY_RETRY_US)
    return {"leases": leases}, (0, rate, rate - n, reset, retry)


def release(state: State, lease: str) -> State:
    """Drop every unit of a lease (units are named `<lease>#1..#cost`)."""
    leases = dict(state.get("leases", {})) if state else {}
    prefix = f"{lease}#"
    return {"leases": {k: v for k, v in leases.items() if not k.startswith(prefix)}}


STEPS: dict[Algorithm, Step] = {
    Algorithm.GCRA: gcra,
    Algorithm.FIXED_WINDOW: fixed_window,
    Algorithm.SLIDING_WINDOW: sliding_window,
    Algorithm.SLIDING_LOG: sliding_log,
    Algorithm.CONCURRENCY: concurrency,
}
