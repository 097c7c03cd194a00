"""`RouteRule`: which requests of an app a limit applies to (method, path template) and
what it counts them by (the key's extractors), with the parts of its headers made once.
The middleware (`middleware.py`) asks each rule `matches`, `counter_key` and `cost_of`."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from rate_limiter.algorithms import Limit
from rate_limiter.extractors import Extractor, RequestView, client_ip
from rate_limiter.headers import policy_item, sf_string

log = structlog.get_logger("rate_limiter.middleware")


def _compile(path: str) -> re.Pattern[str]:
    """`/api/links` exact, `/api/links/{code}` one segment per parameter, `/static/*` prefix."""
    if path.endswith("*"):
        return re.compile(re.escape(path[:-1]) + ".*")
    parts = re.split(r"(\{[^/{}]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


@dataclass
class RouteRule:
    """Which requests a limit applies to, and what it counts them by.

    `method`: one, several, or None for any ("WS" matches WebSocket upgrades). A rule for
    GET also matches HEAD: Starlette answers HEAD on a GET route by running its handler.
    `path`: exact, `{param}` templates, or a `*` suffix for a prefix; None for any path.
    `key`: the extractors whose values make the counter's key (default: the client IP).
    `cost`: an integer >= 0, or a function of the request view returning one (any other
    result counts as 1 and is logged).
    `shadow`: decide and count, never refuse."""

    limit: Limit
    method: str | Sequence[str] | None = None
    path: str | None = None
    key: Sequence[Extractor] = (client_ip,)
    name: str = ""
    cost: int | Callable[[RequestView], int] = 1
    shadow: bool = False
    quoted_name: str = field(init=False, repr=False, default="")
    policy: str = field(init=False, repr=False, default="")
    policy_bytes: bytes = field(init=False, repr=False, default=b"")
    _key_prefix: str = field(init=False, repr=False, default="")
    _methods: frozenset[str] | None = field(init=False, repr=False, default=None)
    _by_client_ip: bool = field(init=False, repr=False, default=False)
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, default=None)
    _exact: str | None = field(init=False, repr=False, default=None)
    _bad_cost_logged: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        if not callable(self.cost) and (
            not isinstance(self.cost, int) or isinstance(self.cost, bool) or self.cost < 0
        ):
            raise ValueError(f"cost must be an integer of 0 or more, got {self.cost!r}")
        if isinstance(self.method, str):
            self._methods = frozenset({self.method.upper()})
        elif self.method is not None:
            self._methods = frozenset(m.upper() for m in self.method)
        self._pattern = _compile(self.path) if self.path else None
        if self.path and "{" not in self.path and not self.path.endswith("*"):
            self._exact = self.path  # a plain path: compared, not matched
        if not self.name:
            methods = ",".join(sorted(self._methods)) if self._methods else "*"
            self.name = f"{methods} {self.path or '*'}"
        if self._methods is not None and "GET" in self._methods:
            self._methods |= {"HEAD"}  # (else HEAD would run a limited handler unlimited)
        if callable(self.key):
            self.key = (self.key,)
        self.key = tuple(self.key)
        self._by_client_ip = self.key == (client_ip,)  # the default: keyed by the peer alone
        # The parts of the draft headers that never change, made once.
        self.quoted_name = sf_string(self.name)
        self.policy = policy_item(self.name, self.limit)
        self.policy_bytes = self.policy.encode()
        self._key_prefix = "mw:" + self.name + "|"

    def matches(self, view: RequestView) -> bool:
        if self._methods is not None and view.method not in self._methods:
            return False
        if self._exact is not None:
            return view.path == self._exact
        return self._pattern is None or self._pattern.fullmatch(view.path) is not None

    def counter_key(self, view: RequestView) -> str | None:
        """`mw:<rule>|<value>|...`, or None when the request lacks one of the values."""
        if self._by_client_ip:  # the default rule, without the extractor's call
            ip = view.client_ip
            return self._key_prefix + (ip if ip is not None else client_ip(view))
        if len(self.key) == 1:  # the usual case, without building a list
            value = self.key[0](view)
            return None if value is None else self._key_prefix + value
        values = []
        for extract in self.key:
            value = extract(view)
            if value is None:
                return None
            values.append(value)
        return self._key_prefix + "|".join(values)

    def cost_of(self, view: RequestView) -> int:
        """The request's cost. A cost function that returns something other than an integer
        of 0 or more (a negative cost would refill a bucket) is a bug in the app: the request
        costs 1, as if there were no function, and the rule logs it (once)."""
        if not callable(self.cost):
            return self.cost
        cost = self.cost(view)
        if isinstance(cost, int) and not isinstance(cost, bool) and cost >= 0:
            return cost
        if not self._bad_cost_logged:
            self._bad_cost_logged = True
            log.error("rate_limit_invalid_cost", rule=self.name, cost=repr(cost)[:100], using=1)
        return 1
