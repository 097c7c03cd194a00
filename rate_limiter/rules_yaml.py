"""The YAML parser: rule files in Envoy ratelimit's format, meaning what they mean in Envoy,
extended with `algorithm`, `burst`, `count_refused` and `prefetch` (in a `rate_limit`) and
`apply_limits` and `algorithm` (at the top of a file), each changing behaviour only in a
file that uses it.

    domain: api
    descriptors:
      - key: remote_address            # no value: every address gets its own limit
        rate_limit: {unit: minute, requests_per_unit: 60}
      - key: api_key
        value: internal                # this exact value...
        rate_limit: {unlimited: true}  # ...is never limited
      - key: api_key
        rate_limit: {unit: second, requests_per_unit: 10, algorithm: gcra, burst: 20}
        descriptors:                   # nested: api_key + route
          - key: route
            value: "POST /api/*"       # trailing * matches a prefix
            shadow_mode: true          # decide and count, never refuse
            rate_limit: {unit: hour, requests_per_unit: 1000}

All of Envoy's keys work as Envoy defines them: `replaces` (a rule that drops another named
rule from a request's checks), `requests_per_unit: 0` (refuse every request: a blocklist
entry), a descriptor with neither `rate_limit` nor nested descriptors (no limit: an
allowlist entry), `share_threshold` (every value a wildcard matches shares one counter),
`quota_mode`, `metadata`, and `detailed_metric` and `value_to_metric` (stats names). A rule
naming no algorithm counts as Envoy's does: a fixed window aligned to the unit, refused hits
counted. What Envoy refuses is refused here, with the file and line.

Files are read with yaml's node API (`yaml_nodes.py`) so every error names its file and line.
"""

from __future__ import annotations

from typing import Any

import structlog
import yaml

from rate_limiter.algorithms import MAX_RATE, UNITS, Algorithm, Limit
from rate_limiter.errors import RulesError
from rate_limiter.rules import ApplyLimits, Block, Domain, Level, Node, Rule
from rate_limiter.yaml_nodes import MAX_DEPTH, NodeReader, compose

log = structlog.get_logger("rate_limiter.rules_yaml")

# Envoy reads requests_per_unit as a uint32; burst is held to the same.
MAX_REQUESTS = MAX_RATE

# `apply_limits` and a file-wide `algorithm` are this project's; the rest is Envoy's.
DOMAIN_KEYS = {"domain", "descriptors", "apply_limits", "algorithm"}
DESCRIPTOR_KEYS = {
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "quota_mode",
    "metadata",
}
RATE_LIMIT_KEYS = {
    "unit",
    "requests_per_unit",
    "unlimited",
    "name",
    "algorithm",
    "burst",
    "count_refused",
    "prefetch",
    "replaces",
}


class _Parser(NodeReader):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.every_level = False
        self.algorithm: Algorithm | None = None  # the file's own default, if it names one

    def document(self, root: yaml.Node | None) -> Domain:
        if root is None:
            raise self.error(None, "the file is empty (expected 'domain' and 'descriptors')")
        top = self.mapping(root, DOMAIN_KEYS, "the file")
        if "domain" not in top:
            raise self.error(root, "missing 'domain'")
        domain = self.scalar(top["domain"], str, "domain").strip()
        if not domain:
            raise self.error(top["domain"], "domain must not be empty")
        apply_limits = ApplyLimits.LAST_ENTRY
        if "apply_limits" in top:
            raw = self.scalar(top["apply_limits"], str, "apply_limits")
            try:
                apply_limits = ApplyLimits(raw)
            except ValueError:
                names = ", ".join(a.value for a in ApplyLimits)
                raise self.error(
                    top["apply_limits"], f"unknown apply_limits {raw!r} (expected one of: {names})"
                ) from None
        self.every_level = apply_limits is ApplyLimits.EVERY_LEVEL
        if "algorithm" in top:
            self.algorithm = self.algorithm_of(top["algorithm"])
        found = Domain(domain, Level(), self.source, apply_limits)
        self.descriptors(top.get("descriptors"), domain, [], found.descriptors)
        warn_unknown_replaces(found)
        return found

    def algorithm_of(self, node: yaml.Node) -> Algorithm:
        raw = self.scalar(node, str, "algorithm")
        try:
            return Algorithm.parse(raw)
        except ValueError:
            names = ", ".join(a.value for a in Algorithm)
            raise self.error(
                node, f"unknown algorithm {raw!r} (expected one of: {names})"
            ) from None

    def flag(self, d: dict[str, yaml.Node], name: str) -> bool:
        return bool(self.scalar(d[name], bool, name)) if name in d else False

    def descriptors(
        self, node: yaml.Node | None, domain: str, path: list[str], level: Level
    ) -> Level:
        """The nodes of `node` added to `level` (a merged domain's level may hold some)."""
        if node is None:
            return level
        if len(path) >= MAX_DEPTH:
            raise self.error(node, f"descriptors nest more than {MAX_DEPTH} levels deep")
        for item in self.sequence(node, "descriptors"):
            d = self.mapping(item, DESCRIPTOR_KEYS, "a descriptor")
            if "key" not in d:
                raise self.error(item, "a descriptor needs a 'key'")
            key = self.scalar(d["key"], str, "key")
            if not key:
                raise self.error(d["key"], "key must not be empty")
            value = self.scalar(d["value"], str, "value") if "value" in d else None
            if value == "" or (value is not None and d["value"].tag.endswith(":null")):
                value = None  # (`value: ""` or `value: ~` is no value, as in Envoy)
            here = [*path, f"{key}_{value}" if value is not None else key]
            there = level.by_key.get(here[-1])
            if there is not None:
                # (Envoy joins key and value with `_` to index them: `a_b` and `a`=`b` collide.)
                raise self.error(
                    item,
                    f"duplicate descriptor composite key {'.'.join([domain, *here])!r}"
                    f" (as {there.key}={there.value or '*'} above)",
                )
            shadow = self.flag(d, "shadow_mode")
            for metrics_only in ("detailed_metric", "value_to_metric"):
                self.flag(d, metrics_only)  # (how Envoy names its statistics: checked)
            share = self.flag(d, "share_threshold")
            if share and "*" not in (value or ""):
                raise self.error(
                    d["share_threshold"],
                    "share_threshold applies to a wildcard value (one containing '*')",
                )
            metadata = self.plain_mapping(d["metadata"], "metadata") if "metadata" in d else None
            rule = None
            if "rate_limit" in d:
                rule = self.rate_limit(
                    d["rate_limit"],
                    domain,
                    here,
                    shadow=shadow,
                    quota_mode=self.flag(d, "quota_mode"),
                    detailed_metric=self.flag(d, "detailed_metric"),
                    metadata=metadata,
                )
            elif shadow:  # (Envoy ignores it; most likely a misplaced line, so say so)
                log.warning(
                    "rules_shadow_mode_without_rate_limit",
                    source=f"{self.source}:{item.start_mark.line + 1}",
                )
            # (Neither a rate_limit nor nested descriptors: no limit for what it matches, an
            # allowlist entry in Envoy's format.)
            built = Node(
                key, value, rule, share=share, value_to_metric=self.flag(d, "value_to_metric")
            )
            level.add(built)
            self.descriptors(d.get("descriptors"), domain, here, built.children)
        return level

    def rate_limit(
        self,
        node: yaml.Node,
        domain: str,
        path: list[str],
        *,
        shadow: bool,
        quota_mode: bool,
        detailed_metric: bool,
        metadata: Any,
    ) -> Rule:
        r = self.mapping(node, RATE_LIMIT_KEYS, "rate_limit")
        line = node.start_mark.line + 1
        stat_key = ".".join([domain, *path])
        name = self.scalar(r["name"], str, "name") if "name" in r else stat_key
        replaces = self.replaces(r["replaces"], name) if "replaces" in r else ()
        unlimited = self.flag(r, "unlimited")
        common: dict[str, Any] = {
            "shadow_mode": shadow,
            "source": self.source,
            "line": line,
            "replaces": replaces,
            "replaceable": "name" in r or self.every_level,
            "quota_mode": quota_mode,
            "stat_key": stat_key,
            "detailed_metric": detailed_metric,
            "metadata": metadata,
        }
        if unlimited:
            # (requests_per_unit is ignored beside `unlimited: true`, as Envoy ignores it,
            # but it must still be one)
            extra = set(r) - {"unlimited", "name", "replaces", "requests_per_unit"}
            if extra:
                raise self.error(node, f"an unlimited rule takes no {', '.join(sorted(extra))}")
            if "requests_per_unit" in r:
                self.requests_per_unit(r["requests_per_unit"])
            return Rule(name, None, None, None, **common)
        if "unit" not in r:
            raise self.error(node, "rate_limit needs 'unit'")
        unit = self.scalar(r["unit"], str, "unit").lower()
        if unit not in UNITS:
            raise self.error(
                r["unit"], f"unknown unit {unit!r} (expected one of: {', '.join(UNITS)})"
            )
        # (Envoy reads a missing requests_per_unit as 0: every request refused)
        rpu = self.requests_per_unit(r["requests_per_unit"]) if "requests_per_unit" in r else 0
        if rpu == 0:
            extra = set(r) & {"algorithm", "burst", "count_refused", "prefetch"}
            if extra:
                raise self.error(
                    node,
                    "a rule of 0 requests refuses every request: it takes no "
                    + ", ".join(sorted(extra)),
                )
            block = Block(float(UNITS[unit]))
            return Rule(name, None, unit, 0, block=block, **common)
        algorithm, count_refused = self.counting(r)
        burst = None
        if "burst" in r:
            burst = self.scalar(r["burst"], int, "burst")
            if not 1 <= burst <= MAX_REQUESTS:
                raise self.error(r["burst"], f"burst must be between 1 and {MAX_REQUESTS}")
            if algorithm is not Algorithm.GCRA:
                raise self.error(r["burst"], "burst applies to the gcra (token bucket) algorithm")
        prefetch = None
        if "prefetch" in r:
            prefetch = self.scalar(r["prefetch"], bool, "prefetch")
            if prefetch and algorithm is not Algorithm.GCRA:
                raise self.error(
                    r["prefetch"], "prefetch applies to the gcra (token bucket) algorithm"
                )
        try:
            limit = Limit(rpu, float(UNITS[unit]), algorithm, burst, count_refused, prefetch)
        except ValueError as exc:  # (what Limit itself refuses: the per-unit algorithms' bound)
            raise self.error(r["requests_per_unit"], str(exc)) from None
        return Rule(name, limit, unit, rpu, **common)

    def counting(self, r: dict[str, yaml.Node]) -> tuple[Algorithm, bool]:
        """The rule's algorithm and whether refused requests count. Named (on the rule or
        for the whole file): as named, refusals not counted unless `count_refused`. Named
        nowhere: Envoy's counting, a fixed window aligned to the unit that counts every hit
        (or GCRA when the rule uses `burst` or `prefetch`, which only GCRA has)."""
        if "algorithm" in r:
            algorithm: Algorithm | None = self.algorithm_of(r["algorithm"])
        elif self.algorithm is not None:
            algorithm = self.algorithm
        elif "burst" in r or "prefetch" in r:
            algorithm = Algorithm.GCRA
        else:
            algorithm = None
        if "count_refused" in r:
            count_refused = self.scalar(r["count_refused"], bool, "count_refused")
        else:
            count_refused = algorithm is None
        return algorithm or Algorithm.FIXED_WINDOW, count_refused

    def requests_per_unit(self, node: yaml.Node) -> int:
        rpu: int = self.scalar(node, int, "requests_per_unit")
        if not 0 <= rpu <= MAX_REQUESTS:
            raise self.error(node, f"requests_per_unit must be between 0 and {MAX_REQUESTS}")
        return rpu

    def replaces(self, node: yaml.Node, own_name: str) -> tuple[str, ...]:
        """`replaces: [{name: ...}, ...]`, as Envoy writes it."""
        names = []
        for item in self.sequence(node, "replaces"):
            entry = self.mapping(item, {"name"}, "a replaces entry")
            if "name" not in entry:
                raise self.error(item, "a replaces entry needs a 'name'")
            replaced = self.scalar(entry["name"], str, "name").strip()
            if not replaced:
                raise self.error(item, "a replaces entry must not have an empty name")
            if replaced == own_name:
                raise self.error(item, f"a rule cannot replace itself ({own_name!r})")
            names.append(replaced)
        return tuple(names)


def parse_text(text: str, source: str = "<rules>") -> Domain:
    """One domain from YAML text; `RulesError` names the line of any problem."""
    parser = _Parser(source)
    docs = compose(text, source)
    if len(docs) > 1:
        raise parser.error(docs[1], "one domain per file (found a second YAML document)")
    try:
        return parser.document(docs[0] if docs else None)
    except RulesError:
        raise
    except RecursionError:
        raise RulesError(f"{source}:1: the rules nest too deeply", file=source, line=1) from None
    except (yaml.YAMLError, ValueError, TypeError, ArithmeticError) as exc:
        # Whatever slipped past the checks above still leaves as a RulesError.
        raise RulesError(f"{source}:1: invalid rules: {exc}", file=source, line=1) from None


def warn_unknown_replaces(domain: Domain) -> None:
    names = {rule.name for rule in domain.rules()}
    for rule in domain.rules():
        unknown = [name for name in rule.replaces if name not in names]
        if unknown:  # (Envoy accepts it, and another descriptor's file may hold it; say so)
            log.warning(
                "rules_replaces_unknown_rule",
                rule=rule.name,
                replaces=unknown,
                source=f"{rule.source}:{rule.line}",
            )
