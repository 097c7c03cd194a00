"""The policy engine: rules (from YAML) x descriptor entries -> decisions. No FastAPI here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.backends.base import AsyncBackend, refund_refused
from rate_limiter.backends.fallback import BACKEND_FAILED
from rate_limiter.errors import InvalidCost, UnknownDomain
from rate_limiter.headers import Applied
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules import Block, Match, RuleSet

Entries = Sequence[tuple[str, str]]
log = structlog.get_logger("rate_limiter.service")


@dataclass(frozen=True)
class RuleDecision:
    rule: str
    limit: Limit | Block
    decision: Decision
    shadow_mode: bool
    key: str = ""  # where its state lives (to give a lease back)

    @property
    def enforced_allowed(self) -> bool:
        """What this rule means for the request: shadow rules never refuse."""
        return self.decision.allowed or self.shadow_mode


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    decisions: list[RuleDecision]

    def applied(self) -> list[Applied]:
        """The enforced rules, for the draft headers (shadow rules stay invisible)."""
        return [Applied(d.rule, d.limit, d.decision) for d in self.decisions if not d.shadow_mode]

    @property
    def retry_after(self) -> float:
        refused = [d.decision.retry_after for d in self.decisions if not d.enforced_allowed]
        return max(refused, default=0.0)


class RateLimitService:
    """Checks descriptors against the current rules on one backend."""

    def __init__(
        self,
        *,
        rules: Callable[[], RuleSet],
        backend: AsyncBackend,
        metrics: LimiterMetrics | None = None,
        near_limit_ratio: float = 0.8,
        max_cost: int = 1_000_000,
    ) -> None:
        self.rules = rules
        self.backend = backend
        self.metrics = metrics
        self.near_limit_ratio = near_limit_ratio
        self.max_cost = max_cost

    def _matches(self, domain: str, entries: Entries) -> list[Match]:
        found = self.rules().get(domain)
        if found is None:
            raise UnknownDomain(f"no rules for domain {domain!r}", domain=domain)
        return found.match(entries)

    async def _decide(self, domain: str, entries: Entries, cost: int) -> list[RuleDecision]:
        matches = self._matches(domain, entries)
        decided = iter(
            await asyncio.gather(
                *(self.backend.acquire(m.key, m.rule.limit, cost) for m in matches if m.rule.limit)
            )
        )
        out = []
        for m in matches:
            rule = m.rule
            if rule.limit is not None:
                out.append(
                    RuleDecision(rule.name, rule.limit, next(decided), rule.shadow_mode, m.key)
                )
            elif rule.block is not None:  # refuses everything, without asking the backend
                decision = rule.block.decision()
                out.append(RuleDecision(rule.name, rule.block, decision, rule.shadow_mode, m.key))
        return out

    async def check(self, *, domain: str, entries: Entries, cost: int = 1) -> CheckResult:
        """Take `cost` from every rule on the entries' path; allowed when none refuses. A
        refused check keeps nothing it took (see `_give_back`)."""
        if not 1 <= cost <= self.max_cost:
            raise InvalidCost(f"cost must be between 1 and {self.max_cost}")
        decisions = await self._decide(domain, entries, cost)
        if self.metrics:
            for d in decisions:
                self.metrics.record(
                    domain=domain,
                    rule=d.rule,
                    allowed=d.decision.allowed,
                    shadow=d.shadow_mode,
                    remaining=d.decision.remaining,
                    limit=d.decision.limit,
                    near_ratio=self.near_limit_ratio,
                )
        allowed = all(d.enforced_allowed for d in decisions)
        if not allowed:
            decisions = await self._give_back(domain, decisions, cost)
        return CheckResult(allowed, decisions)

    async def _give_back(
        self, domain: str, decisions: list[RuleDecision], cost: int
    ) -> list[RuleDecision]:
        """A refused check keeps nothing: a refused request is not counted (unless a rule
        says `count_refused`), and that holds for every rule of the check, not only the one
        that refused it. So what the other rules granted goes back at once: concurrency
        leases are released (and leave the response), or a caller that was told no would
        hold them until they expire; the units the other algorithms took are refunded, as
        much as each key still holds (the response shows the remaining after it). Envoy's
        ratelimit counts them (unless `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT`, which
        reads the counters first and so can still miss): there, requests refused by a
        tight per-user limit use up a shared one that other users need.

        A give-back that fails leaves the units taken (they come back with time) and the
        verdict stands."""

        async def give_back(d: RuleDecision) -> RuleDecision:
            if not isinstance(d.limit, Limit):
                return d
            try:
                if d.decision.lease:
                    await self.backend.release(d.key, d.limit, d.decision.lease)
                    return dataclasses.replace(d, decision=d.decision._replace(lease=None))
                after = await refund_refused(self.backend, d.key, d.limit, cost, d.decision)
                if self.metrics and after is not d.decision:  # (something went back)
                    self.metrics.refunds.labels(domain, d.rule).inc()
                return dataclasses.replace(d, decision=after)
            except BACKEND_FAILED as exc:  # (the units stay taken: they come back with time)
                log.warning("rate_limit_give_back_failed", rule=d.rule, error=str(exc)[:200])
            return d

        return list(await asyncio.gather(*(give_back(d) for d in decisions)))

    async def usage(self, *, domain: str, entries: Entries) -> CheckResult:
        """The current state of every rule on the path, consuming nothing."""
        decisions = await self._decide(domain, entries, 0)
        return CheckResult(all(d.enforced_allowed for d in decisions), decisions)

    async def release(self, *, domain: str, entries: Entries, lease: str) -> int:
        """Give a concurrency lease back on every concurrency rule on the path; the number
        of rules that held it (0 for a lease that was never granted, or is gone already)."""
        released = 0
        for m in self._matches(domain, entries):
            if m.rule.limit and m.rule.limit.algorithm is Algorithm.CONCURRENCY:
                released += await self.backend.release(m.key, m.rule.limit, lease)
        return released
