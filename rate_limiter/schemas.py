"""Request and response models of the HTTP service."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, Field

from rate_limiter.service import CheckResult, Descriptor, RuleDecision


class Entry(BaseModel):
    key: str = Field(min_length=1, max_length=256)
    value: str = Field(default="", max_length=1024)


class _Descriptors(BaseModel):
    domain: str = Field(min_length=1, max_length=255)
    descriptors: list[Entry] = Field(min_length=1, max_length=32)

    def entries(self) -> list[tuple[str, str]]:
        return [(e.key, e.value) for e in self.descriptors]


class DescriptorIn(BaseModel):
    """One descriptor in Envoy's shape: its entries and, optionally, its own cost."""

    entries: list[Entry] = Field(min_length=1, max_length=32)
    # (0: decided on, not counted)
    hits_addend: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)


class CheckRequest(BaseModel):
    domain: str = Field(min_length=1, max_length=255)
    # Entries (`{key, value}`: one descriptor) or descriptors (`{entries: [...]}`: several,
    # as Envoy sends them; each decided on its own, the request refused if one refuses).
    # (the bounds on each arm, so the schema states them)
    descriptors: (
        Annotated[list[Entry], Field(min_length=1, max_length=32)]
        | Annotated[list[DescriptorIn], Field(min_length=1, max_length=32)]
    )
    # (strict: `true` or `"3"` is a 422, not a cost of 1 or 3)
    cost: int = Field(default=1, ge=1, le=1_000_000, strict=True)

    def to_descriptors(self) -> list[Descriptor]:
        if all(isinstance(d, Entry) for d in self.descriptors):
            return [Descriptor([(e.key, e.value) for e in self.descriptors])]  # type: ignore[union-attr]
        return [
            Descriptor([(e.key, e.value) for e in d.entries], d.hits_addend)
            for d in self.descriptors
            if isinstance(d, DescriptorIn)
        ]


class ReleaseRequest(_Descriptors):
    # Exactly what a check hands out (32 hex digits, '.', the cost); anything else is a 422.
    lease: str = Field(pattern=r"^[0-9a-f]{32}\.[1-9][0-9]{0,9}$", max_length=64)


class DecisionRead(BaseModel):
    rule: str
    allowed: bool
    shadow_mode: bool
    limit: int
    remaining: int
    reset_after: float = Field(description="Seconds until the quota is full again.")
    retry_after: float | None = Field(
        description="Seconds to wait before this cost fits; 0 when allowed, null when never."
    )
    lease: str | None = None
    descriptor: int = Field(default=0, description="Which of the check's descriptors it decided.")
    degraded: bool = Field(description="Decided by the failure policy: Redis was unreachable.")

    @classmethod
    def of(cls, d: RuleDecision) -> DecisionRead:
        retry = d.decision.retry_after
        return cls(
            rule=d.rule,
            allowed=d.decision.allowed,
            shadow_mode=d.shadow_mode,
            limit=d.decision.limit,
            remaining=d.decision.remaining,
            reset_after=round(d.decision.reset_after, 6),
            retry_after=None if math.isinf(retry) else round(retry, 6),
            lease=d.decision.lease,
            descriptor=d.descriptor,
            degraded=d.decision.degraded,
        )


class CheckResponse(BaseModel):
    allowed: bool
    decisions: list[DecisionRead]
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="The `metadata` of the rules whose descriptors passed, merged as Envoy's"
        " ratelimit merges it into its dynamic metadata (the first to set a key keeps it);"
        " null when none has any.",
    )

    @classmethod
    def of(cls, result: CheckResult) -> CheckResponse:
        return cls(
            allowed=result.allowed,
            decisions=[DecisionRead.of(d) for d in result.decisions],
            metadata=result.metadata(),
        )


class ReleaseResponse(BaseModel):
    # The concurrency rules on the path that held the lease (0: never granted, or gone).
    released: int


class RuleRead(BaseModel):
    name: str
    descriptor: str
    unit: str | None
    requests_per_unit: int | None
    algorithm: str | None
    blocks: bool  # requests_per_unit 0: every request refused
    replaces: list[str]
    burst: int | None
    count_refused: bool
    prefetch: bool | None  # None: the service's RATE_LIMITER_PREFETCH decides
    shadow_mode: bool
    unlimited: bool
    source: str


class DomainRead(BaseModel):
    domain: str
    source: str
    rules: list[RuleRead]
    # Descriptors with neither a rate_limit nor nested descriptors (Envoy's allowlist
    # entries): a value there escapes the rule its bare key has at that level; only rules
    # above it on the path (none, at the top) still apply.
    allowlisted: list[str]


class RulesRead(BaseModel):
    path: str
    loaded_at: float
    reloads: int
    last_error: str | None
    domains: list[DomainRead]
