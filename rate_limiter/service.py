"""The policy engine: rules (from YAML) x descriptor entries -> decisions. No FastAPI here."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.backends.base import AsyncBackend
from rate_limiter.config import Block, Match, RuleSet
from rate_limiter.errors import InvalidCost, UnknownDomain
from rate_limiter.headers import Applied
from rate_limiter.metrics import LimiterMetrics

Entries = Sequence[tuple[str, str]]


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
        """Take `cost` from every rule on the entries' path; allowed when none refuses."""
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
            decisions = await self._give_back(decisions)
        return CheckResult(allowed, decisions)

    async def _give_back(self, decisions: list[RuleDecision]) -> list[RuleDecision]:
        """A refused check holds nothing: the concurrency leases it was granted on the other
        rules go back at once (and leave the response), or they would be held until they
        expire by a caller that was told no."""
        out = []
        for d in decisions:
            if d.decision.lease and isinstance(d.limit, Limit):
                await self.backend.release(d.key, d.limit, d.decision.lease)
                d = dataclasses.replace(d, decision=d.decision._replace(lease=None))
            out.append(d)
        return out

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
