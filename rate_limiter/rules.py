"""The rule model and its matching: what a domain's descriptors are, and which rules a
request's descriptor entries meet on their way down the tree (Envoy's walk).

The YAML format these come from is described in `rules_yaml.py`; the watcher that reloads
the files is `rules_watcher.py`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from rate_limiter.algorithms import Decision, Limit


@dataclass(frozen=True)
class Block:
    """Envoy's `requests_per_unit: 0`: every request is refused (a blocklist entry). The
    service decides it itself; no backend keeps a counter for it."""

    period: float
    capacity: int = 0  # (the draft headers show q=0)

    def decision(self) -> Decision:
        # Never fits: no Retry-After, since waiting does not help; the window is the unit.
        return Decision(False, 0, 0, self.period, math.inf)


@dataclass(frozen=True)
class Rule:
    """One `rate_limit` block, resolved."""

    name: str
    limit: Limit | None  # None when unlimited or blocking
    unit: str | None
    requests_per_unit: int | None
    shadow_mode: bool = False
    source: str = ""
    line: int = 0
    block: Block | None = None  # requests_per_unit: 0
    replaces: tuple[str, ...] = ()  # names of rules this one drops from a check

    @property
    def unlimited(self) -> bool:
        return self.limit is None and self.block is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "requests_per_unit": self.requests_per_unit,
            "algorithm": self.limit.algorithm.value if self.limit else None,
            "blocks": self.block is not None,
            "replaces": list(self.replaces),
            "burst": self.limit.burst if self.limit else None,
            "count_refused": self.limit.count_refused if self.limit else False,
            "prefetch": self.limit.prefetch if self.limit else None,
            "shadow_mode": self.shadow_mode,
            "unlimited": self.unlimited,
            "source": f"{self.source}:{self.line}",
        }


@dataclass
class Node:
    key: str
    value: str | None  # None: any value, each its own limit; "x*": prefix match
    rule: Rule | None
    children: list[Node] = field(default_factory=list)
    # share_threshold (wildcard values only): every value it matches counts on one counter
    share: bool = False

    def matches(self, key: str, value: str) -> bool:
        if key != self.key:
            return False
        if self.value is None:
            return True
        if self.value.endswith("*"):
            return value.startswith(self.value[:-1])
        return value == self.value


@dataclass(frozen=True)
class Match:
    rule: Rule
    key: str  # the storage key: domain plus the entries down to this node


@dataclass
class Domain:
    name: str
    descriptors: list[Node]
    source: str

    def match(self, entries: Sequence[tuple[str, str]]) -> list[Match]:
        """The rules on the entries' path, outermost first; [] when an `unlimited` rule is on it."""
        found: list[Match] = []
        level = self.descriptors
        parts = [quote(self.name, safe="")]
        for key, value in entries:
            node = _pick(level, key, value)
            if node is None:
                break
            if node.share and node.value is not None:
                # Every value the wildcard matches, on one counter: the prefix and a raw
                # `*` (which no quoted value contains, so no request value can name it).
                counted = quote(node.value[:-1], safe="") + "*"
            else:
                counted = quote(value, safe="")
            parts.append(f"{quote(key, safe='')}={counted}")
            if node.rule is not None:
                found.append(Match(node.rule, "|".join(parts)))
            level = node.children
        if any(m.rule.replaces for m in found):
            # Envoy's `replaces`: a rule in the check drops the rules it names from it (an
            # unlimited one too).
            replaced = {name for m in found for name in m.rule.replaces}
            found = [m for m in found if m.rule.name not in replaced]
        if any(m.rule.unlimited for m in found):
            return []  # an unlimited rule on the path exempts the request from all of them
        return found

    def rules(self) -> Iterable[Rule]:
        stack = list(self.descriptors)
        while stack:
            node = stack.pop(0)
            if node.rule:
                yield node.rule
            stack[:0] = node.children


def _pick(level: list[Node], key: str, value: str) -> Node | None:
    """Envoy's precedence: an exact value, then a prefix wildcard, then the bare key."""
    exact = [n for n in level if n.value is not None and not n.value.endswith("*")]
    prefix = [n for n in level if n.value is not None and n.value.endswith("*")]
    bare = [n for n in level if n.value is None]
    for group in (exact, sorted(prefix, key=lambda n: -len(n.value or "")), bare):
        for node in group:
            if node.matches(key, value):
                return node
    return None


@dataclass
class RuleSet:
    domains: dict[str, Domain]
    fingerprint: str = ""
    loaded_at: float = field(default_factory=time.time)

    def get(self, name: str) -> Domain | None:
        return self.domains.get(name)
