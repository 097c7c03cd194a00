"""The rule model and its matching: a domain's tree of descriptors, and the rules a request's
descriptors meet on their way down it.

Two ways to read a path, chosen per file (`apply_limits`, see `rules_yaml.py`):
- `last_entry`, Envoy's and the default: a descriptor gets the limit of the node its *last*
  entry reached; nothing when the walk stops earlier (an entry that matches nothing, a node
  with no children before the entries run out). An `unlimited` ancestor changes nothing.
- `every_level`, this project's: every node on the path that has a limit applies, so one
  descriptor carries a per-key and a per-key-and-route limit at once; an `unlimited` rule on
  the path exempts the descriptor.

At each level a node is picked as Envoy picks it: the exact `key_value`, then the wildcard
values in file order (the first that matches wins), then the bare key.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from rate_limiter.algorithms import UNITS, Algorithm, Decision, Limit

Entries = Sequence[tuple[str, str]]


class ApplyLimits(StrEnum):
    LAST_ENTRY = "last_entry"  # Envoy's
    EVERY_LEVEL = "every_level"  # this project's


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
    # Whether `replaces` can name it: in Envoy only a rule with an explicit `name`; in an
    # `every_level` file any rule, by its path name too.
    replaceable: bool = False
    quota_mode: bool = False  # refuses the request only when every quota rule of it does
    stat_key: str = ""  # Envoy's stats key: the domain and the path, `d.key_value.key`
    detailed_metric: bool = False
    metadata: Any = field(default=None, compare=False)

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
    value: str | None  # None: any value, each its own counter; with `*`: a wildcard
    rule: Rule | None
    children: Level = field(default_factory=lambda: Level())
    share: bool = False  # share_threshold: every value the wildcard matches, one counter
    value_to_metric: bool = False

    @property
    def final_key(self) -> str:
        """How Envoy indexes a node: `key_value`, or `key` alone."""
        return self.key if self.value is None else f"{self.key}_{self.value}"

    @property
    def wildcard(self) -> bool:
        return self.value is not None and "*" in self.value


def glob(parts: Sequence[str], text: str) -> bool:
    """`text` against a pattern split on its `*`s, each `*` any run of characters."""
    if len(parts) == 1:
        return parts[0] == text
    first, *middle, last = parts
    if len(text) < sum(map(len, parts)) or not (text.startswith(first) and text.endswith(last)):
        return False
    rest = text[len(first) : len(text) - len(last)]
    for part in middle:
        at = rest.find(part)
        if at < 0:
            return False
        rest = rest[at + len(part) :]
    return True


class Level:
    """One level of the tree: its nodes in file order, indexed as Envoy indexes them."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.by_key: dict[str, Node] = {}
        self.wildcards: list[tuple[list[str], Node]] = []

    def add(self, node: Node) -> Node | None:
        """Adds `node`; the node already there under the same joined key, if any (then
        nothing is added: `a_b` beside `a` with value `b` collide, as they do in Envoy)."""
        final = node.final_key
        if final in self.by_key:
            return self.by_key[final]
        self.nodes.append(node)
        self.by_key[final] = node
        if node.wildcard:
            self.wildcards.append((final.split("*"), node))
        return None

    def pick(self, key: str, value: str) -> tuple[Node | None, str]:
        """The node an entry reaches and how: "value", "wildcard" or "key"."""
        final = f"{key}_{value}"
        node = self.by_key.get(final)
        if node is not None:
            return node, "value"
        for parts, candidate in self.wildcards:
            if glob(parts, final):
                return candidate, "wildcard"
        node = self.by_key.get(key)
        return node, "key"


@dataclass(frozen=True)
class Match:
    rule: Rule
    key: str  # the storage key: domain plus the entries down to this node
    stat_key: str = ""  # Envoy's stats key for this request (detailed_metric, value_to_metric)


def _counted(node: Node, how: str, value: str) -> str:
    if node.share and node.value is not None and how == "wildcard":
        # Every value the wildcard matches, on one counter: the pattern with raw `*`s (which
        # no quoted value contains, so no request value can name it).
        return "*".join(quote(part, safe="") for part in node.value.split("*"))
    return quote(value, safe="")


@dataclass
class Domain:
    name: str
    descriptors: Level
    source: str
    apply_limits: ApplyLimits = ApplyLimits.LAST_ENTRY

    def lookup(self, entries: Entries) -> list[Match]:
        """The rules one descriptor meets, outermost first (unlimited ones included)."""
        if self.apply_limits is ApplyLimits.EVERY_LEVEL:
            return self._every_level(entries)
        return self._last_entry(entries)

    def match(self, entries: Entries) -> list[Match]:
        """`lookup` with one descriptor's `replaces` and `unlimited` applied."""
        [found] = resolve([self.lookup(entries)])
        return found or []

    def _every_level(self, entries: Entries) -> list[Match]:
        found: list[Match] = []
        level = self.descriptors
        parts = [quote(self.name, safe="")]
        for key, value in entries:
            node, how = level.pick(key, value)
            if node is None:
                break
            parts.append(f"{quote(key, safe='')}={_counted(node, how, value)}")
            if node.rule is not None:
                found.append(Match(node.rule, "|".join(parts), node.rule.stat_key))
            level = node.children
        return found

    def _last_entry(self, entries: Entries) -> list[Match]:
        level = self.descriptors
        parts = [quote(self.name, safe="")]
        detailed, enhanced, shared = [self.name], [self.name], [self.name]
        any_shared = False
        last = len(entries) - 1
        for i, (key, value) in enumerate(entries):
            node, how = level.pick(key, value)
            if node is None:
                return []
            parts.append(f"{quote(key, safe='')}={_counted(node, how, value)}")
            detailed.append(f"{key}_{value}")
            shown = _metric_value(node, how, value)
            enhanced.append(f"{key}_{shown}" if shown else key)
            if how == "wildcard" and node.share:
                shared.append(f"{key}_{node.value}")
                any_shared = True
            else:
                shared.append(f"{key}_{value}" if value else key)
            if i == last:
                rule = node.rule
                if rule is None:
                    return []
                if rule.detailed_metric:
                    stat = ".".join(shared if any_shared else detailed)
                else:
                    stat = ".".join(enhanced)
                return [Match(rule, "|".join(parts), stat)]
            if not node.children.nodes:
                return []  # (more entries than the tree has levels: Envoy applies nothing)
            level = node.children
        return []

    def rules(self) -> Iterable[Rule]:
        stack = list(self.descriptors.nodes)
        while stack:
            node = stack.pop(0)
            if node.rule:
                yield node.rule
            stack[:0] = node.children.nodes


def _metric_value(node: Node, how: str, value: str) -> str:
    """What Envoy's stats key shows of an entry's value (its `value_to_metric` rules)."""
    if how == "wildcard":
        if node.share or not node.value_to_metric:
            return node.value or ""
        return value
    if how == "value":
        return value
    return value if node.value_to_metric else ""


def override(domain: str, entries: Entries, requests_per_unit: int, unit: str) -> Match:
    """Envoy's limit override: a descriptor that carries its own limit gets that one, counted
    as Envoy counts, under its entries (`domain.key_value...` in the stats), never shadowed."""
    stat = ".".join([domain, *(f"{k}_{v}" if v else k for k, v in entries)])
    key = "|".join(
        [
            quote(domain, safe=""),
            "override",
            *(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in entries),
        ]
    )
    period = float(UNITS[unit])
    if requests_per_unit == 0:
        rule = Rule(stat, None, unit, 0, block=Block(period), stat_key=stat)
    else:
        limit = Limit(requests_per_unit, period, Algorithm.FIXED_WINDOW, count_refused=True)
        rule = Rule(stat, limit, unit, requests_per_unit, stat_key=stat)
    return Match(rule, key, stat)


def resolve(found: Sequence[list[Match]]) -> list[list[Match] | None]:
    """A request's descriptors' rules with Envoy's `replaces` (a rule met by any descriptor
    drops the named rules from all of them, unlimited ones too) and `unlimited` (a
    descriptor that meets one is not limited: None) applied."""
    replaced = {name for matches in found for m in matches for name in m.rule.replaces}
    out: list[list[Match] | None] = []
    for matches in found:
        if replaced:
            matches = [m for m in matches if not (m.rule.replaceable and m.rule.name in replaced)]
        out.append(None if any(m.rule.unlimited for m in matches) else matches)
    return out


@dataclass
class RuleSet:
    domains: dict[str, Domain]
    fingerprint: str = ""
    loaded_at: float = field(default_factory=time.time)

    def get(self, name: str) -> Domain | None:
        return self.domains.get(name)
