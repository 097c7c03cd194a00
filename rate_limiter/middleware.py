"""`RateLimitMiddleware`: pure ASGI, in front of any FastAPI/Starlette app.

    app.add_middleware(
        RateLimitMiddleware,
        rules=[RouteRule(Limit.per_minute(30), method="POST", path="/api/links",
                         key=[client_ip], name="links-create")],
        trusted_proxies=["10.0.0.0/8"],
    )
    # in the lifespan, once Redis is open:
    app.state.rate_limit_backend = FallbackBackend(RedisBackend(redis))
    # (opt-in, busy keys' tokens spent in batches: FallbackBackend(PrefetchBackend(...)))

Refusals are 429 problem+json with `Retry-After`; every response of a limited route carries
the draft `RateLimit-Policy` / `RateLimit` headers. A WebSocket upgrade that is refused is
denied before it is accepted (an HTTP 429 where the server supports the
`websocket.http.response` extension, else a close with code 1008). Concurrency rules hold
their lease for the whole request (or WebSocket session) and release it after.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, NamedTuple

import structlog

from common.errors import problem_message
from rate_limiter.algorithms import Decision
from rate_limiter.backends.base import AsyncBackend, refund_refused
from rate_limiter.backends.fallback import BACKEND_FAILED
from rate_limiter.backends.memory import MemoryBackend
from rate_limiter.extractors import RequestView, parse_networks
from rate_limiter.headers import limit_item, retry_after_seconds
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.route_rules import RouteRule

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
BackendSource = AsyncBackend | Callable[[Any], AsyncBackend | None] | None

log = structlog.get_logger("rate_limiter.middleware")
STATE_ATTR = "rate_limit_backend"
# Down, or failed one call: either way `fail_open` answers for that request only.


class _Taken(NamedTuple):
    rule: RouteRule
    key: str
    decision: Decision


def _headers(applied: list[_Taken]) -> list[tuple[bytes, bytes]]:
    if not applied:
        return []
    if len(applied) == 1:  # the usual case, without the joins
        rule, _, decision = applied[0]
        return [
            (b"ratelimit-policy", rule.policy_bytes),
            (b"ratelimit", limit_item(rule.quoted_name, decision).encode()),
        ]
    policy = ", ".join(t.rule.policy for t in applied)
    current = ", ".join(limit_item(t.rule.quoted_name, t.decision) for t in applied)
    return [(b"ratelimit-policy", policy.encode()), (b"ratelimit", current.encode())]


def _adding_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send`, with the draft headers added to the response's start (an accepted WebSocket
    carries them too, as its handshake's response)."""

    def send_with_headers(message: Message) -> Awaitable[None]:
        # A plain function handing back `send`'s awaitable: no coroutine of its own per
        # message (two per response).
        if message["type"] in ("http.response.start", "websocket.accept"):
            message["headers"] = [*message.get("headers", ()), *headers]
        return send(message)

    return send_with_headers


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Sequence[RouteRule],
        backend: BackendSource = None,
        trusted_proxies: Sequence[str] = (),
        metrics: LimiterMetrics | None = None,
        fail_open: bool = True,
        near_limit_ratio: float = 0.8,
    ) -> None:
        """`backend`: a backend, or a function of the app returning one, or None to use
        `app.state.rate_limit_backend` (set in the lifespan, once Redis is open). Until one
        is there, a process-local memory backend stands in."""
        self.app = app
        self.rules = tuple(rules)  # fixed: `_methods` below is worked out from them once
        self.backend = backend
        self.trusted = parse_networks(trusted_proxies)
        self.metrics = metrics
        self.fail_open = fail_open
        self.near_limit_ratio = near_limit_ratio
        self._standin: MemoryBackend | None = None
        # The methods any rule can match (None: some rule matches any): a request with another
        # method (a redirect's GET past a POST-only rule) goes straight through.
        self._methods: frozenset[str] | None = frozenset()
        for rule in self.rules:
            if rule._methods is None:
                self._methods = None
                break
            self._methods |= rule._methods

    def _backend(self, scope: Scope) -> AsyncBackend:
        found: AsyncBackend | None = None
        if self.backend is None:
            try:
                # Starlette's `State` keeps its attributes in the dict `_state`; reading it
                # skips the Python-level `__getattr__` (this runs on every limited request).
                found = scope["app"].state._state.get(STATE_ATTR)
            except (KeyError, AttributeError, TypeError):  # not a Starlette app's scope
                found = getattr(getattr(scope.get("app"), "state", None), STATE_ATTR, None)
        elif hasattr(self.backend, "acquire"):
            found = self.backend  # type: ignore[assignment]
        else:
            found = self.backend(scope.get("app"))  # type: ignore[operator]
        if found is not None:
            return found
        if self._standin is None:
            log.warning("rate_limit_backend_missing", using="memory")
            self._standin = MemoryBackend()
        return self._standin

    async def _acquire(
        self, backend: AsyncBackend, rule: RouteRule, key: str, cost: int
    ) -> Decision:
        try:
            return await backend.acquire(key, rule.limit, cost)
        except BACKEND_FAILED as exc:
            return self._backend_failed(backend, rule, exc)

    def _backend_failed(
        self, backend: AsyncBackend, rule: RouteRule, exc: BaseException
    ) -> Decision:
        """The backend failed this call: `fail_open` decides it."""
        log.error("rate_limit_backend_error", rule=rule.name, error=str(exc)[:200])
        if self.metrics:
            self.metrics.backend_errors.labels(backend.name).inc()
        cap = rule.limit.capacity
        return Decision(
            self.fail_open,
            cap,
            cap if self.fail_open else 0,
            0.0,
            0.0 if self.fail_open else 1.0,
            degraded=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            method = scope.get("method", "WS")
        elif kind == "websocket":
            method = "WS"
        else:
            await self.app(scope, receive, send)
            return
        if self._methods is not None and method not in self._methods:
            await self.app(scope, receive, send)
            return
        wanted = self._wanted(scope, method)
        if not wanted:
            await self.app(scope, receive, send)
            return
        backend = self._backend(scope)
        if len(wanted) == 1:
            # The common case, and the hot path: no task per rule, and the verdict worked out
            # without the general path's list comprehensions (the same logic; merging the
            # two costs ~5,000 instructions, 1% of a bare request, measured with callgrind).
            rule, key, cost = wanted[0]
            del wanted  # (what the request no longer needs is not kept while it waits)
            try:
                decision = await backend.acquire(key, rule.limit, cost)
            except BACKEND_FAILED as exc:
                decision = self._backend_failed(backend, rule, exc)
            if self.metrics is not None:
                self._record_one(rule, decision)
            if rule.shadow:
                headers, refused = [], []
            else:
                headers = [
                    (b"ratelimit-policy", rule.policy_bytes),
                    (b"ratelimit", limit_item(rule.quoted_name, decision).encode()),
                ]
                refused = [] if decision.allowed else [_Taken(rule, key, decision)]
            leased = [_Taken(rule, key, decision)] if decision.lease else []
        else:
            headers, refused, leased = await self._decide_all(backend, wanted)
        try:
            if refused:
                await self._refuse(scope, receive, send, refused, headers)
                return
            if not headers:
                await self.app(scope, receive, send)
                return
            await self.app(scope, receive, _adding_headers(send, headers))
        finally:
            if leased:
                await self._release(backend, leased)

    def _wanted(self, scope: Scope, method: str) -> list[tuple[RouteRule, str, int]]:
        """The rules that apply to the request, each with its counter's key and the
        request's cost. (Worked out here, not in `__call__`: nothing of it, the request view
        included, stays alive while the request waits for its decision; see the README on
        the garbage collector.)"""
        view = RequestView(scope, self.trusted, method)
        wanted = []
        for rule in self.rules:
            if rule.matches(view):
                key = rule.counter_key(view)
                if key is not None:
                    wanted.append((rule, key, rule.cost_of(view)))
        return wanted

    async def _decide_all(
        self, backend: AsyncBackend, wanted: list[tuple[RouteRule, str, int]]
    ) -> tuple[list[tuple[bytes, bytes]], list[_Taken], list[_Taken]]:
        """Several rules: decided at once; a refusal gives back what the others took. The
        draft headers, the refusals and the leases to release after the request."""
        decisions = await asyncio.gather(
            *(self._acquire(backend, rule, key, cost) for rule, key, cost in wanted)
        )
        taken = [_Taken(r, k, d) for (r, k, _), d in zip(wanted, decisions, strict=True)]
        if self.metrics is not None:
            self._record(taken)
        if any(not t.decision.allowed and not t.rule.shadow for t in taken):
            # A refused request keeps nothing the other rules granted (their leases are
            # released after the refusal is sent).
            taken = await self._refund(backend, taken, [cost for _, _, cost in wanted])
        shown = [t for t in taken if not t.rule.shadow]
        refused = [t for t in shown if not t.decision.allowed]
        return _headers(shown), refused, [t for t in taken if t.decision.lease]

    def _record(self, taken: list[_Taken]) -> None:
        for t in taken:
            self._record_one(t.rule, t.decision)

    def _record_one(self, rule: RouteRule, decision: Decision) -> None:
        assert self.metrics is not None
        self.metrics.record(
            domain="http",
            rule=rule.name,
            allowed=decision.allowed,
            shadow=rule.shadow,
            remaining=decision.remaining,
            limit=decision.limit,
            near_ratio=self.near_limit_ratio,
        )

    async def _refund(
        self, backend: AsyncBackend, taken: list[_Taken], costs: list[int]
    ) -> list[_Taken]:
        """Give back what the rules that allowed a refused request took (see
        `RateLimitService._give_back`); the decisions with the remaining after it."""

        async def refund(t: _Taken, cost: int) -> _Taken:
            with contextlib.suppress(*BACKEND_FAILED):  # (the units come back with time)
                after = await refund_refused(backend, t.key, t.rule.limit, cost, t.decision)
                if self.metrics is not None and after is not t.decision:  # (something went back)
                    self.metrics.refunds.labels("http", t.rule.name).inc()
                return t._replace(decision=after)
            return t

        return list(await asyncio.gather(*map(refund, taken, costs)))

    async def _release(self, backend: AsyncBackend, leased: list[_Taken]) -> None:
        for t in leased:
            assert t.decision.lease is not None
            # If the backend is down the lease simply expires on its own.
            with contextlib.suppress(*BACKEND_FAILED):
                await backend.release(t.key, t.rule.limit, t.decision.lease)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        refused: list[_Taken],
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        waits = [retry_after_seconds(t.decision) for t in refused]
        finite = [w for w in waits if w is not None]
        rule = refused[0].rule.name
        if len(finite) == len(waits):
            retry = max(finite)
            body, headers = problem_message(
                429,
                f"Rate limit {rule!r} exceeded; retry in {retry}s.",
                headers=[*headers, (b"retry-after", str(retry).encode())],
                rule=rule,
                retry_after=retry,
            )
        else:
            body, headers = problem_message(
                429,
                "This request costs more than the limit allows; it never fits.",
                headers=headers,
                rule=rule,
            )
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        # WebSocket: refuse the upgrade before accepting it.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})
