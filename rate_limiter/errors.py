"""The limiter's domain exceptions; each app maps them to HTTP once."""

from __future__ import annotations

import math
from typing import Any

from common.errors import DomainError


class RateLimited(DomainError):
    title = "Too many requests"

    @classmethod
    def from_decision(cls, decision: Any, detail: str = "") -> RateLimited:
        if math.isinf(decision.retry_after):
            return cls(detail or "The cost is larger than the limit's capacity; it never fits.")
        return cls(
            detail or f"Rate limit exceeded; retry in {decision.retry_after:.3f}s.",
            retry_after=max(1, math.ceil(decision.retry_after)),
        )


class InvalidCost(DomainError, ValueError):
    title = "Invalid cost"


class RulesError(DomainError, ValueError):
    """A rules file that cannot be used; the message names the file and line."""

    title = "Invalid rules"


class InvalidRequest(DomainError):
    title = "Invalid request"


class BackendError(DomainError):
    """The backend failed one call for a reason other than being unreachable (e.g. a script
    error); that call fails, the failure policy is not engaged."""

    title = "Rate limit backend error"
