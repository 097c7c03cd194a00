"""The two backend interfaces and the key layout every backend shares."""

from __future__ import annotations

import re
import uuid
from typing import Protocol

from rate_limiter.algorithms import Algorithm, Decision, Limit
from rate_limiter.refunds import gives_back

KEY_PREFIX = "rl"


# Prepended to keys that would make an empty hash tag (see `state_key`).
TAG_ESCAPE = "\x00"


def state_key(key: str, algorithm: Algorithm) -> str:
    """`rl:{<key>}:<algorithm>`: the hash tag puts a key's companions in one cluster slot, and
    the algorithm suffix keeps one algorithm from reading another's state.

    Redis hashes the text between the first `{` and the next `}`. An empty key, or one that
    starts with `}`, would make that empty and Redis would hash each whole key instead,
    scattering a key's companions over slots; those keys (and, to stay one-to-one, keys
    that already start with the escape) get one escape character in front."""
    if not key or key[0] in "}" + TAG_ESCAPE:
        key = TAG_ESCAPE + key
    return f"{KEY_PREFIX}:{{{key}}}:{algorithm.value}"


# 32 random hex digits, a dot, the cost: what `new_lease` makes and nothing else.
LEASE_RE = re.compile(r"[0-9a-f]{32}\.[1-9][0-9]{0,9}")


def new_lease(cost: int) -> str:
    """A lease id: random, plus its cost, so releasing needs nothing else."""
    return f"{uuid.uuid4().hex}.{cost}"


def lease_cost(lease: str) -> int | None:
    """The cost a lease id claims, or None when it is not one `new_lease` could have made.

    The claim is never trusted on its own: the release script first checks that the lease's
    last unit (`<lease>#<cost>`) is really held, so a forged cost costs one lookup."""
    if LEASE_RE.fullmatch(lease) is None:
        return None
    return int(lease.rsplit(".", 1)[1])


class AsyncBackend(Protocol):
    name: str

    async def acquire(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """Decide on `cost` units for `key` under `limit` (cost 0 only reports)."""
        ...

    async def release(self, key: str, limit: Limit, lease: str) -> bool:
        """Give back a concurrency lease; whether it was held (a forged, expired or already
        released lease frees nothing)."""
        ...

    async def refund(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision:
        """Give back the `cost` units an allowed `decision` took, for a request that did not
        go ahead: as much as the key still holds, never more (`refunds.refund`). The
        decision with the remaining after it. Concurrency leases are released instead."""
        ...

    async def ping(self) -> None: ...


async def refund_refused(
    backend: AsyncBackend, key: str, limit: Limit, cost: int, decision: Decision
) -> Decision:
    """What a check refused by another rule gives back of `decision` (`gives_back` says
    whether it owes anything): the decision after the refund, or the same object when
    nothing went back (nothing owed, or a backend written before refunds existed, which
    has no `refund`: its units stay taken). Backend failures propagate."""
    refund = getattr(backend, "refund", None)
    if refund is None or not gives_back(limit, decision, cost):
        return decision
    after: Decision = await refund(key, limit, cost, decision)
    return after


class SyncBackend(Protocol):
    name: str

    def acquire_sync(self, key: str, limit: Limit, cost: int = 1) -> Decision: ...

    def release_sync(self, key: str, limit: Limit, lease: str) -> bool: ...

    def refund_sync(self, key: str, limit: Limit, cost: int, decision: Decision) -> Decision: ...
