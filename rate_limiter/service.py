"""The policy engine: rules (from YAML) x descriptor entries -> decisions. No FastAPI here."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.backends.base import AsyncBackend, refund_refused
from rate_limiter.backends.fallback import BACKEND_FAILED
from rate_limiter.errors import InvalidCost
from rate_limiter.headers import Applied
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules import Block, Match, RuleSet, override, resolve

Entries = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Descriptor:
    """One of a check's descriptors: its entries and, when it has its own, its cost (Envoy's
    per-descriptor `hits_addend`; 0 checks without counting)."""

    entries: Entries
    cost: int | None = None
    # Envoy's limit override, (requests_per_unit, unit): this limit instead of the rules'.
    limit: tuple[int, str] | None = None


log = structlog.get_logger("rate_limiter.service")


@dataclass(frozen=True)
class RuleDecision:
    rule: str
    limit: Limit | Block
    decision: Decision
    shadow_mode: bool
    key: str = ""  # where its state lives (to give a lease back)
    descriptor: int = 0  # which of the check's descriptors it decided
    quota_mode: bool = False
    stat_key: str = ""  # Envoy's stats key
    cost: int = 1
    metadata: dict[str, Any] | None = None  # the rule's `metadata`, as its file wrote it

    @property
    def enforced_allowed(self) -> bool:
        """What this rule means for the request: shadow rules never refuse."""
        return self.decision.allowed or self.shadow_mode


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    decisions: list[RuleDecision]
    descriptors: int = 1
    unlimited: frozenset[int] = frozenset()  # descriptors an `unlimited` rule exempted

    def applied(self) -> list[Applied]:
        """The enforced rules, for the draft headers (shadow rules stay invisible)."""
        return [Applied(d.rule, d.limit, d.decision) for d in self.decisions if not d.shadow_mode]

    @property
    def retry_after(self) -> float:
        if self.allowed:
            return 0.0
        refused = [d.decision.retry_after for d in self.decisions if not d.enforced_allowed]
        return max(refused, default=0.0)

    def of_descriptor(self, index: int) -> list[RuleDecision]:
        return [d for d in self.decisions if d.descriptor == index]

    def metadata(self) -> dict[str, Any] | None:
        """Envoy's: the `metadata` of the rules whose descriptors passed (neither refused nor
        exempted by an `unlimited` rule), merged in descriptor order: the first to set a key
        keeps it, mappings under one key merge. None when there is none (a quota-mode
        request tells Envoy this way which of its quotas still has room)."""
        merged: dict[str, Any] = {}
        if not any(d.metadata for d in self.decisions):
            return None
        for i in range(self.descriptors):
            mine = self.of_descriptor(i)
            if i in self.unlimited or not all(d.enforced_allowed for d in mine):
                continue
            for d in mine:
                if d.metadata:
                    merge_metadata(merged, d.metadata)
        return merged or None


def merge_metadata(into: dict[str, Any], more: dict[str, Any]) -> None:
    """`more` merged into `into`, Envoy's way: a key already there stays, unless both are
    mappings, which merge the same way."""
    for key, value in more.items():
        there = into.get(key)
        if key not in into:
            into[key] = copy.deepcopy(value)  # (the rule's own stays as the file wrote it)
        elif isinstance(there, dict) and isinstance(value, dict):
            merge_metadata(there, value)


def verdict(decisions: Sequence[RuleDecision]) -> bool:
    """Envoy's overall code: refused when a rule refuses (shadow rules never do), except
    that `quota_mode` rules refuse only together: when every one of them refuses."""
    quota = [d for d in decisions if d.quota_mode]
    if quota and not any(d.enforced_allowed for d in quota):
        return False
    return all(d.enforced_allowed for d in decisions if not d.quota_mode)


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

    def _matches(self, domain: str, descriptors: Sequence[Descriptor]) -> list[list[Match] | None]:
        """Each descriptor's rules (None: exempted by an `unlimited` one). An unknown domain
        has none: Envoy answers OK."""
        found = self.rules().get(domain)
        if found is None:
            return [[] for _ in descriptors]
        return resolve(
            [
                [override(domain, d.entries, *d.limit)] if d.limit else found.lookup(d.entries)
                for d in descriptors
            ]
        )

    async def _decide(
        self, domain: str, descriptors: Sequence[Descriptor], cost: int
    ) -> tuple[list[RuleDecision], frozenset[int]]:
        resolved = self._matches(domain, descriptors)
        wanted: list[tuple[int, Match, int]] = []
        for i, (d, matches) in enumerate(zip(descriptors, resolved, strict=True)):
            here = cost if d.cost is None or cost == 0 else d.cost
            wanted.extend((i, m, here) for m in matches or ())
        decided = iter(
            await asyncio.gather(
                *(
                    self.backend.acquire(m.key, m.rule.limit, here)
                    for _, m, here in wanted
                    if m.rule.limit
                )
            )
        )
        out = []
        for i, m, here in wanted:
            rule = m.rule
            quota: Limit | Block
            if rule.limit is not None:
                decision, quota = next(decided), rule.limit
            elif rule.block is not None:  # refuses everything, without asking the backend
                decision, quota = rule.block.decision(), rule.block
            else:
                continue
            out.append(
                RuleDecision(
                    rule.name,
                    quota,
                    decision,
                    rule.shadow_mode,
                    m.key,
                    descriptor=i,
                    quota_mode=rule.quota_mode,
                    stat_key=m.stat_key,
                    cost=here,
                    metadata=rule.metadata,
                )
            )
        unlimited = frozenset(i for i, matches in enumerate(resolved) if matches is None)
        return out, unlimited

    async def check(
        self,
        *,
        domain: str,
        entries: Entries | None = None,
        cost: int = 1,
        descriptors: Sequence[Descriptor] | None = None,
    ) -> CheckResult:
        """Take `cost` (or a descriptor's own) from the rules the descriptors meet; allowed
        unless one refuses (see `verdict`). A refused check keeps nothing it took (see
        `_give_back`)."""
        wanted = _descriptors(entries, descriptors)
        if not 1 <= cost <= self.max_cost:
            raise InvalidCost(f"cost must be between 1 and {self.max_cost}")
        for one in wanted:  # (a descriptor's own cost may be 0: checked, not counted)
            if one.cost is not None and not 0 <= one.cost <= self.max_cost:
                raise InvalidCost(f"a descriptor's cost must be between 0 and {self.max_cost}")
        decisions, unlimited = await self._decide(domain, wanted, cost)
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
                self.metrics.envoy.record(
                    d.stat_key,
                    hits=d.cost,
                    allowed=d.decision.allowed,
                    shadow=d.shadow_mode,
                    remaining=d.decision.remaining,
                    limit=d.decision.limit,
                    near_ratio=self.near_limit_ratio,
                )
        allowed = verdict(decisions)
        if not allowed:
            decisions = await self._give_back(domain, decisions)
        return CheckResult(allowed, decisions, len(wanted), unlimited)

    async def _give_back(self, domain: str, decisions: list[RuleDecision]) -> list[RuleDecision]:
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
                after = await refund_refused(self.backend, d.key, d.limit, d.cost, d.decision)
                if self.metrics and after is not d.decision:  # (something went back)
                    self.metrics.refunds.labels(domain, d.rule).inc()
                return dataclasses.replace(d, decision=after)
            except BACKEND_FAILED as exc:  # (the units stay taken: they come back with time)
                log.warning("rate_limit_give_back_failed", rule=d.rule, error=str(exc)[:200])
            return d

        return list(await asyncio.gather(*(give_back(d) for d in decisions)))

    async def usage(
        self,
        *,
        domain: str,
        entries: Entries | None = None,
        descriptors: Sequence[Descriptor] | None = None,
    ) -> CheckResult:
        """The current state of every rule the descriptors meet, consuming nothing."""
        wanted = _descriptors(entries, descriptors)
        decisions, unlimited = await self._decide(domain, wanted, 0)
        return CheckResult(verdict(decisions), decisions, len(wanted), unlimited)

    async def release(self, *, domain: str, entries: Entries, lease: str) -> int:
        """Give a concurrency lease back on every concurrency rule the entries meet; the
        number of rules that held it (0 for a lease never granted, or gone already)."""
        released = 0
        [matches] = self._matches(domain, [Descriptor(entries)])
        for m in matches or ():
            if m.rule.limit and m.rule.limit.algorithm is Algorithm.CONCURRENCY:
                released += await self.backend.release(m.key, m.rule.limit, lease)
        return released


def _descriptors(
    entries: Entries | None, descriptors: Sequence[Descriptor] | None
) -> Sequence[Descriptor]:
    if descriptors is not None:
        return descriptors
    return [Descriptor(entries or ())]
