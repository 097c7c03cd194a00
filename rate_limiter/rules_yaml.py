"""The YAML parser: rule files in Envoy ratelimit's format, extended with `algorithm`,
`burst`, `count_refused` and `prefetch`.

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
rule from the same check), `requests_per_unit: 0` (refuse every request: a blocklist entry),
a descriptor with neither `rate_limit` nor nested descriptors (no limit: an allowlist entry),
`share_threshold` (every value a wildcard matches shares one counter), and the metrics-only
`detailed_metric` and `value_to_metric` (accepted).

Files are read with yaml's node API so every error names its file and line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog
import yaml
from yaml.constructor import SafeConstructor

from rate_limiter.algorithms import MAX_RATE, UNITS, Algorithm, Limit
from rate_limiter.errors import RulesError
from rate_limiter.rules import Block, Domain, Node, Rule, RuleSet

log = structlog.get_logger("rate_limiter.rules_yaml")

# Envoy reads requests_per_unit as a uint32; burst is held to the same.
MAX_REQUESTS = MAX_RATE
# Descriptor levels in a file (a check carries at most 32 entries: deeper ones never match).
MAX_DEPTH = 32
MERGE_TAG = "tag:yaml.org,2002:merge"

DOMAIN_KEYS = {"domain", "descriptors"}
DESCRIPTOR_KEYS = {
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
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


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.constructor = SafeConstructor()
        self._merged: dict[tuple[int, str], dict[str, yaml.Node]] = {}

    def error(self, node: yaml.Node | None, message: str) -> RulesError:
        line = node.start_mark.line + 1 if node is not None else 1
        return RulesError(f"{self.source}:{line}: {message}", file=self.source, line=line)

    def mapping(self, node: yaml.Node, allowed: set[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        return dict(self.pairs(node, allowed, what, 0))

    def pairs(
        self, node: yaml.MappingNode, allowed: set[str], what: str, depth: int
    ) -> dict[str, yaml.Node]:
        """A mapping's keys with YAML merge keys resolved as the YAML spec (and Envoy's YAML
        library) reads them: its own keys first, then those of the mappings it merges, the
        earlier ones before the later. The nodes themselves are left as they are (an anchor
        may be read again elsewhere)."""
        if depth > MAX_DEPTH:
            raise self.error(node, f"merge keys (<<) nest more than {MAX_DEPTH} levels deep")
        # Each node resolved once per file: a mapping merging another twice, which merges
        # another twice, ... would otherwise take 2^depth steps.
        done = self._merged.get((id(node), what))
        if done is not None:
            return done
        own: dict[str, yaml.Node] = {}
        merged: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if k.tag == MERGE_TAG:
                sources = v.value if isinstance(v, yaml.SequenceNode) else [v]
                for source in sources:
                    if not isinstance(source, yaml.MappingNode):
                        raise self.error(
                            source, "a merge key (<<) takes a mapping or a list of them"
                        )
                    for name, value in self.pairs(source, allowed, what, depth + 1).items():
                        merged.setdefault(name, value)
                continue
            name = self.key_name(k, allowed, what)
            if name in own:
                raise self.error(k, f"duplicate key {name!r} in {what}")
            own[name] = v
        done = self._merged[(id(node), what)] = {**merged, **own}
        return done

    def key_name(self, k: yaml.Node, allowed: set[str], what: str) -> str:
        name = str(self.scalar(k, str, "a key"))
        if name not in allowed:
            expected = ", ".join(sorted(allowed))
            raise self.error(k, f"unknown key {name!r} in {what} (expected one of: {expected})")
        return name

    def scalar(self, node: yaml.Node, kind: type, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            expected = {int: "an integer", bool: "true or false"}.get(kind, "a string")
            raise self.error(node, f"{what} must be {expected}")
        if kind is str:
            return str(node.value)
        try:
            value = self.constructor.construct_object(node)
        except yaml.YAMLError as exc:  # an unknown or unsafe tag (`!!python/name:...`)
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(node, f"{what}: {problem}") from None
        except (ValueError, TypeError, ArithmeticError):  # `!!int ten`, `!!float x`
            value = None
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.error(node, f"{what} must be an integer, got {node.value!r}")
        if kind is bool and not isinstance(value, bool):
            raise self.error(node, f"{what} must be true or false, got {node.value!r}")
        return value

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return list(node.value)

    def document(self, root: yaml.Node | None) -> Domain:
        if root is None:
            raise self.error(None, "the file is empty (expected 'domain' and 'descriptors')")
        top = self.mapping(root, DOMAIN_KEYS, "the file")
        if "domain" not in top:
            raise self.error(root, "missing 'domain'")
        domain = self.scalar(top["domain"], str, "domain").strip()
        if not domain:
            raise self.error(top["domain"], "domain must not be empty")
        nodes = self.descriptors(top.get("descriptors"), domain, [])
        found = Domain(domain, nodes, self.source)
        names = {rule.name for rule in found.rules()}
        for rule in found.rules():
            unknown = [name for name in rule.replaces if name not in names]
            if unknown:  # (Envoy accepts it too; most likely a typo, so say so)
                log.warning(
                    "rules_replaces_unknown_rule",
                    rule=rule.name,
                    replaces=unknown,
                    source=f"{self.source}:{rule.line}",
                )
        return found

    def descriptors(self, node: yaml.Node | None, domain: str, path: list[str]) -> list[Node]:
        if node is None:
            return []
        if len(path) >= MAX_DEPTH:
            raise self.error(node, f"descriptors nest more than {MAX_DEPTH} levels deep")
        out: list[Node] = []
        seen: dict[tuple[str, str | None], int] = {}
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
            ident = (key, value)
            if ident in seen:
                raise self.error(
                    item, f"duplicate descriptor {key}={value or '*'} (first at line {seen[ident]})"
                )
            seen[ident] = item.start_mark.line + 1
            here = [*path, f"{key}_{value}" if value is not None else key]
            shadow = (
                self.scalar(d["shadow_mode"], bool, "shadow_mode") if "shadow_mode" in d else False
            )
            for metrics_only in ("detailed_metric", "value_to_metric"):
                if metrics_only in d:  # (how Envoy names its statistics: accepted, checked)
                    self.scalar(d[metrics_only], bool, metrics_only)
            share = False
            if "share_threshold" in d:
                share = self.scalar(d["share_threshold"], bool, "share_threshold")
                if share and not (value or "").endswith("*"):
                    raise self.error(
                        d["share_threshold"],
                        "share_threshold applies to a wildcard value (one ending in '*')",
                    )
            rule = None
            if "rate_limit" in d:
                rule = self.rate_limit(d["rate_limit"], domain, here, shadow)
            elif shadow:  # (Envoy ignores it; most likely a misplaced line, so say so)
                log.warning(
                    "rules_shadow_mode_without_rate_limit",
                    source=f"{self.source}:{item.start_mark.line + 1}",
                )
            # (Neither a rate_limit nor nested descriptors: no limit for what it matches, an
            # allowlist entry in Envoy's format.)
            children = self.descriptors(d.get("descriptors"), domain, here)
            out.append(Node(key, value, rule, children, share))
        return out

    def rate_limit(self, node: yaml.Node, domain: str, path: list[str], shadow: bool) -> Rule:
        r = self.mapping(node, RATE_LIMIT_KEYS, "rate_limit")
        line = node.start_mark.line + 1
        name = self.scalar(r["name"], str, "name") if "name" in r else ".".join([domain, *path])
        replaces = self.replaces(r["replaces"], name) if "replaces" in r else ()
        unlimited = self.scalar(r["unlimited"], bool, "unlimited") if "unlimited" in r else False
        if unlimited:
            # (requests_per_unit is ignored beside `unlimited: true`, as Envoy ignores it,
            # but it must still be one)
            extra = set(r) - {"unlimited", "name", "replaces", "requests_per_unit"}
            if extra:
                raise self.error(node, f"an unlimited rule takes no {', '.join(sorted(extra))}")
            if "requests_per_unit" in r:
                self.requests_per_unit(r["requests_per_unit"])
            return Rule(name, None, None, None, shadow, self.source, line, replaces=replaces)
        for needed in ("unit", "requests_per_unit"):
            if needed not in r:
                raise self.error(node, f"rate_limit needs '{needed}'")
        unit = self.scalar(r["unit"], str, "unit").lower()
        if unit not in UNITS:
            raise self.error(
                r["unit"], f"unknown unit {unit!r} (expected one of: {', '.join(UNITS)})"
            )
        rpu = self.requests_per_unit(r["requests_per_unit"])
        if rpu == 0:
            extra = set(r) & {"algorithm", "burst", "count_refused", "prefetch"}
            if extra:
                raise self.error(
                    node,
                    "a rule of 0 requests refuses every request: it takes no "
                    + ", ".join(sorted(extra)),
                )
            block = Block(float(UNITS[unit]))
            return Rule(name, None, unit, 0, shadow, self.source, line, block, replaces)
        algorithm = Algorithm.GCRA
        if "algorithm" in r:
            raw = self.scalar(r["algorithm"], str, "algorithm")
            try:
                algorithm = Algorithm.parse(raw)
            except ValueError:
                names = ", ".join(a.value for a in Algorithm)
                raise self.error(
                    r["algorithm"], f"unknown algorithm {raw!r} (expected one of: {names})"
                ) from None
        burst = None
        if "burst" in r:
            burst = self.scalar(r["burst"], int, "burst")
            if not 1 <= burst <= MAX_REQUESTS:
                raise self.error(r["burst"], f"burst must be between 1 and {MAX_REQUESTS}")
            if algorithm is not Algorithm.GCRA:
                raise self.error(r["burst"], "burst applies to the gcra (token bucket) algorithm")
        count_refused = (
            self.scalar(r["count_refused"], bool, "count_refused")
            if "count_refused" in r
            else False
        )
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
        return Rule(name, limit, unit, rpu, shadow, self.source, line, replaces=replaces)

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
    try:
        docs = list(yaml.compose_all(text))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except RecursionError:  # (the YAML library composes nested nodes recursively)
        raise RulesError(
            f"{source}:1: the YAML nests too deeply to be read", file=source, line=1
        ) from None
    docs = [d for d in docs if d is not None]
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


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> RulesError:
    """Any YAML error as a RulesError naming the line: marked errors carry a mark, a
    ReaderError (a control character, say) only the character's position."""
    line = 1
    problem = "invalid YAML"
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = exc.problem or exc.context or problem
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
        problem = f"character {char!r} is not allowed"
    else:
        problem = str(exc) or problem
    return RulesError(f"{source}:{line}: invalid YAML: {problem}", file=source, line=line)


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def _digest(contents: Iterable[tuple[Path, bytes]]) -> str:
    digest = hashlib.sha256()
    for file, data in contents:
        digest.update(str(file).encode())
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def fingerprint(path: Path) -> str:
    """What the files hold now; compared with the fingerprint of the rules in force."""
    return _digest((file, file.read_bytes()) for file in rule_files(path))


def load_rules(path: Path) -> RuleSet:
    """A file, or every *.yaml/*.yml in a folder (one domain each).

    Each file is read once: the rules and their fingerprint come from the same bytes, so an
    edit landing during a reload is seen by the next poll instead of being taken as loaded."""
    if not path.exists():
        raise RulesError(f"{path}: no such file or folder", file=str(path), line=0)
    domains: dict[str, Domain] = {}
    contents: list[tuple[Path, bytes]] = []
    for file in rule_files(path):
        try:
            data = file.read_bytes()
            text = data.decode()
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{file}: cannot read: {exc}", file=str(file), line=0) from None
        contents.append((file, data))
        domain = parse_text(text, str(file))
        if domain.name in domains:
            first = domains[domain.name].source
            raise RulesError(
                f"{file}:1: domain {domain.name!r} is already defined in {first}",
                file=str(file),
                line=1,
            )
        domains[domain.name] = domain
    return RuleSet(domains, _digest(contents))
