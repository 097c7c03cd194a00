"""Reading YAML nodes so that every error in a rules file names its file and line:
mappings (merge keys resolved), scalars of one kind, lists, and plain data (a descriptor's
`metadata`). What the nodes mean is `rules_yaml.py`'s."""

from __future__ import annotations

from typing import Any, ClassVar

import yaml
from yaml.constructor import SafeConstructor

from rate_limiter.errors import RulesError

# Descriptor levels in a file (a check carries at most 32 entries: deeper ones never match),
# and levels of merge keys.
MAX_DEPTH = 32
MERGE_TAG = "tag:yaml.org,2002:merge"
STR_TAG = "tag:yaml.org,2002:str"
# Scalars Envoy's key check refuses wherever they stand (outside `metadata`): its YAML library
# reads them as neither a string, an integer nor a boolean.
NOT_STRINGS = {"tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary"}


class NodeReader:
    """Reads the nodes of one file (`source`, for the errors)."""

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
        if not isinstance(k, yaml.ScalarNode) or k.tag != STR_TAG:
            raise self.error(k, f"a key in {what} must be a string, got {_shown(k)}")
        name = str(k.value)
        if name not in allowed:
            expected = ", ".join(sorted(allowed))
            raise self.error(k, f"unknown key {name!r} in {what} (expected one of: {expected})")
        return name

    def scalar(self, node: yaml.Node, kind: type, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            expected = {int: "an integer", bool: "true or false"}.get(kind, "a string")
            raise self.error(node, f"{what} must be {expected}")
        if kind is str:
            if node.tag in NOT_STRINGS:
                raise self.error(node, f"{what} must be a string, got {node.value!r}")
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

    def plain_mapping(self, node: yaml.Node, what: str) -> dict[str, Any] | None:
        """Any mapping as plain data, as Envoy's YAML library reads it (a descriptor's
        `metadata`: returned to Envoy as written, timestamps stay text, keys become text);
        empty or null is none."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        try:
            value = _plain(PlainConstructor().construct_object(node, deep=True))
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(node, f"{what}: {problem}") from None
        return value or None


def compose(text: str, source: str) -> list[yaml.Node]:
    """The documents of YAML text, as nodes; `RulesError` names the line of a YAML error."""
    try:
        docs = list(yaml.compose_all(text))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, source) from None
    except RecursionError:  # (the YAML library composes nested nodes recursively)
        raise RulesError(
            f"{source}:1: the YAML nests too deeply to be read", file=source, line=1
        ) from None
    docs = [d for d in docs if d is not None]
    return docs


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


class PlainConstructor(SafeConstructor):
    """Plain data as Envoy's YAML library reads it into metadata: a timestamp stays text."""

    yaml_constructors: ClassVar = {
        **SafeConstructor.yaml_constructors,
        "tag:yaml.org,2002:timestamp": SafeConstructor.construct_yaml_str,
    }


def _plain(value: Any) -> Any:
    """Plain data as protobuf's Struct holds it: text keys (Envoy prints a key as Go prints
    it: `5`, `true`), text for bytes."""
    if isinstance(value, dict):
        return {_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()  # (not UTF-8: a UnicodeDecodeError, a ValueError: refused)
    return value


def _text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "<nil>" if key is None else str(key)


def _shown(node: yaml.Node) -> str:
    kind = "a mapping" if isinstance(node, yaml.MappingNode) else "a list"
    return repr(node.value) if isinstance(node, yaml.ScalarNode) else kind
