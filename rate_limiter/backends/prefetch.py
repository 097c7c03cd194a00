"""Prefetching: take a busy key's tokens from Redis in batches, spend them in the process.

Exact mode asks Redis for every request: one round trip per decision, which is most of what a
protected route costs once the limiter itself is lean. A key asked thousands of times a
second in one process can instead take a batch of tokens in one call (`gcra_prefetch.lua`)
and spend them locally, asking again when they run out or expire. It is opt-in, GCRA only
(the default algorithm), and the trade is stated exactly:

- The limit still holds, shifted by `ttl`. Every token spent was taken from the one bucket
  in Redis, atomically, and is spent less than `ttl` after it was taken; so over any span of
  time the admitted never exceed `capacity + rate x (span + ttl)`, whatever the number of
  processes (exact mode: `capacity + rate x span`). Unspent tokens are given back only as far
  as they are still owed, found by the batch's position in the debt as a refund finds a
  decision's (see the script), which keeps that bound.
- It may refuse a little early: tokens sitting unspent in another process's batch are not
  available here. At most `share` of the capacity per process and key, for at most `ttl`;
  they go back to Redis with that process's next batch for the key.
- A batch is sized to what this process would spend in `ttl` at the rate it is being asked,
  and never more than `share` of the capacity. A key asked rarely gets batches of one, which
  is exact mode; a limit whose capacity times `share` is below 2 never batches at all.
- While a key's refusal holds (its `retry_after`), requests at least as costly are refused
  locally, as Envoy ratelimit's local over-limit cache does, so a key under attack does not
  cost a round trip per refused request. Not for `count_refused` limits: those go to Redis.
- `remaining` is this process's view: Redis's count at the last batch plus its own unspent
  tokens. `reset_after` counts down from the last batch.
- Other algorithms, peeks (cost 0) and the concurrency limiter go straight to the primary.

Which limits: with `default=True` every GCRA limit but those made with `prefetch=False`;
with `default=False` only those made with `prefetch=True` (the service's default, where a
rule opts in with `prefetch: true`), so the rest stay exact.

Wire it inside the fallback, so that a Redis that is down is handled as always:
`FallbackBackend(PrefetchBackend(RedisBackend(redis)))`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.metrics import LimiterMetrics

_new_tuple = tuple.__new__
_GCRA = Algorithm.GCRA  # (read once: an enum member's lookup is slow on the hot path)

# Keys with a batch kept in memory before the spent and expired ones are swept out.
SWEEP_AT = 10_000


class Prefetching(Protocol):
    """What the primary must do: `RedisBackend` does."""

    name: str

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision: ...

    async def prefetch(
        self,
        key: str,
        limit: Limit,
        cost: int,
        want: int,
        refund: int = 0,
        taken_us: int = 0,
        refund_position: int = 0,
    ) -> tuple[Decision, int, int]: ...

    async def release(self, key: str, limit: Limit, lease: str) -> bool: ...

    async def refund(
        self, key: str, limit: Limit, cost: int, decision: Decision, *, shared: bool = False
    ) -> Decision: ...

    async def ping(self) -> None: ...


class _Batch:
    """One key's tokens in this process, what Redis said when they were taken, and the
    demand since (to size the next batch)."""

    __slots__ = (
        "asked",
        "denied",
        "expires",
        "position",
        "refused_cost",
        "refused_until",
        "remaining",
        "reset_at",
        "since",
        "taken_us",
        "tokens",
        "waiters",
    )

    def __init__(self, now: float) -> None:
        self.tokens = 0  # taken from Redis, not spent yet
        self.expires = 0.0  # when they may no longer be spent (monotonic clock)
        self.taken_us = 0  # when Redis handed out the oldest of them (Redis clock)
        self.position = 0  # and where they sit in its debt (below this; see refund.lua)
        self.remaining = 0  # Redis's remaining at the last answer, our tokens not included
        self.reset_at = 0.0
        self.refused_until = 0.0  # a refusal that holds for costs >= refused_cost until then
        self.refused_cost = 0
        self.asked = 0  # tokens asked for since the last batch, and since when
        self.since = now
        self.waiters: list[asyncio.Future[bool]] | None = None  # a batch is on its way
        self.denied = False  # the last fetch was refused or failed

    def take(self, cost: int, capacity: int, now: float) -> Decision | None:
        """A decision made here, or None when Redis must be asked."""
        if cost <= self.tokens and now < self.expires:
            self.tokens -= cost
            reset = self.reset_at - now
            remaining = self.remaining + self.tokens
            if remaining > capacity:  # (Redis refills too; no min()/max() calls on this path)
                remaining = capacity
            # (built as decision_from_reply builds them: no Python-level __new__ per request)
            return _new_tuple(  # type: ignore[no-any-return]
                Decision,
                (
                    True,
                    capacity,
                    remaining,
                    reset if reset > 0 else 0.0,
                    0.0,
                    None,
                    False,
                    self.taken_us,  # (no later than Redis handed these tokens out)
                    self.position,
                ),
            )
        if now < self.refused_until and cost >= self.refused_cost:
            reset = self.reset_at - now
            remaining = min(self.remaining + self.tokens, capacity)
            retry = self.refused_until - now
            return Decision(False, capacity, remaining, max(reset, 0.0), retry)
        return None

    def idle(self, now: float) -> bool:
        return now >= self.expires and now >= self.refused_until and self.waiters is None


class PrefetchBackend:
    """Decides a GCRA key's requests from batches of its tokens taken from `primary`."""

    def __init__(
        self,
        primary: Prefetching,
        *,
        ttl: float = 0.05,
        share: float = 0.01,
        default: bool = True,
        metrics: LimiterMetrics | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.primary = primary
        self.name = primary.name
        self.ttl = ttl
        self.share = share
        self.default = default  # prefetch the limits that do not say (`prefetch=None`)?
        self.clock = clock
        self.metrics = metrics
        self._batches: dict[tuple[bytes, str], _Batch] = {}
        self._sweep_at = SWEEP_AT
        self.fetches = 0  # calls to Redis for a batch (observability, tests)

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        wanted = limit.prefetch
        if wanted is None:
            wanted = self.default
        if not wanted or limit.algorithm is not _GCRA or not cost:
            return await self.primary.acquire(key, limit, cost)
        now = self.clock()
        batch = self._batches.get((limit.spec, key))
        if batch is None:
            batch = self._new_batch((limit.spec, key), now)
        batch.asked += cost
        alone = False
        while True:
            decision = batch.take(cost, limit.capacity, now)
            if decision is not None:
                return decision
            if alone:
                return await self._fetch(batch, key, limit, cost, now)
            if batch.waiters is None:  # this request fetches the key's next batch
                batch.waiters = []
                try:
                    return await self._fetch(batch, key, limit, cost, now)
                finally:
                    waiters, batch.waiters = batch.waiters, None
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(batch.denied)
            # A batch for this key is on its way: wait for it rather than ask as well.
            mine: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            batch.waiters.append(mine)
            # If that fetch is refused (or fails), each waiter asks for itself, all in one
            # turn: a refusal that counts is not kept, and one fetch after another would
            # queue each waiter behind the round trips of all before it.
            alone = await mine
            now = self.clock()

    async def _fetch(
        self, batch: _Batch, key: str, limit: Limit, cost: int, now: float
    ) -> Decision:
        """Ask Redis: this request's decision, and a batch sized to the demand."""
        elapsed = now - batch.since
        demand = batch.asked / elapsed * self.ttl if elapsed > 0 else 0.0
        most = max(cost, int(limit.capacity * self.share))
        want = min(most, max(cost, round(demand)))
        batch.asked, batch.since = 0, now
        # Unspent tokens go back with this call. Should it fail, they are lost rather than
        # kept: Redis may have taken them back before the failure reached us, and spending
        # them again would admit too many. (Losing them only refuses a little early.)
        refund, batch.tokens = batch.tokens, 0
        self.fetches += 1
        if self.metrics is not None:
            self.metrics.prefetch_fetches.inc()
        batch.denied = True  # (until it is known to have been allowed)
        decision, granted, taken_us = await self.primary.prefetch(
            key, limit, cost, want, refund, batch.taken_us, batch.position
        )
        batch.remaining = decision.remaining
        batch.reset_at = now + decision.reset_after
        if not decision.allowed:
            if not limit.count_refused:
                batch.refused_until = now + decision.retry_after
                batch.refused_cost = cost
            return decision
        batch.refused_until, batch.denied = 0.0, False
        if granted > cost:
            # `now` is from before the call, so these expire `ttl` after Redis handed them
            # out at the latest. Tokens of a batch that came back meanwhile keep their own
            # (earlier) expiry, time taken and position (lower in the debt, so owed less
            # surely): the two are spent and given back as one, by the older terms.
            expires = now + self.ttl
            position = decision.position - cost + granted  # (the batch's top)
            if batch.tokens:
                expires = min(expires, batch.expires)
                taken_us = min(taken_us, batch.taken_us)
                position = min(position, batch.position)
            batch.tokens += granted - cost
            batch.expires, batch.taken_us, batch.position = expires, taken_us, position
        return decision._replace(remaining=min(decision.remaining + batch.tokens, limit.capacity))

    def _new_batch(self, ident: tuple[bytes, str], now: float) -> _Batch:
        if len(self._batches) >= self._sweep_at:
            # Unspent tokens of an expired batch swept out are not given back: they were
            # taken, Redis repays them with time (a little early refusal, never too many).
            for old in [i for i, b in self._batches.items() if b.idle(now)]:
                del self._batches[old]
            self._sweep_at = max(SWEEP_AT, 2 * len(self._batches))
        batch = self._batches[ident] = _Batch(now)
        return batch

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        return await self.primary.release(key, limit, lease)

    async def refund(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        """Units of a prefetched key go back into its batch, to be spent here, while the
        batch may still be spent and is no older than they are (every token is still spent
        within `ttl` of being taken). Otherwise they go back to Redis, by the decision's
        position: for one made here, its batch's, which the batch's other decisions share
        (so it must not be given up as the newest when it is: `shared`)."""
        batch = self._batches.get((limit.spec, key))
        if (
            batch is not None
            and decision.allowed
            and cost > 0
            and decision.at_us >= batch.taken_us
            and self.clock() < batch.expires
        ):
            batch.tokens += cost
            return decision._replace(remaining=min(decision.remaining + cost, limit.capacity))
        wanted = self.default if limit.prefetch is None else limit.prefetch
        shared = wanted and limit.algorithm is _GCRA
        return await self.primary.refund(key, limit, cost, decision, shared=shared)

    async def ping(self) -> None:
        await self.primary.ping()
