"""Rule files on disk: a file or a folder of them read into one `RuleSet`, a domain split
over several files merged (Envoy's MERGE_DOMAIN_CONFIG) or refused, and the fingerprint the
watcher compares to see that they changed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from rate_limiter.errors import RulesError
from rate_limiter.rules import Domain, RuleSet
from rate_limiter.rules_yaml import parse_text


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


def load_rules(path: Path, *, merge_domains: bool = False) -> RuleSet:
    """A file, or every *.yaml/*.yml in a folder. A domain named by two files is refused, or
    with `merge_domains` (Envoy's MERGE_DOMAIN_CONFIG) their top-level descriptors are
    joined, a descriptor both define being refused.

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
        if domain.name not in domains:
            domains[domain.name] = domain
            continue
        first = domains[domain.name]
        if not merge_domains:
            raise _file_error(file, f"domain {domain.name!r} is already defined in {first.source}")
        if first.apply_limits is not domain.apply_limits:
            raise _file_error(
                file,
                f"domain {domain.name!r} is merged with {first.source}, which applies limits"
                f" at {first.apply_limits.value} (this file: {domain.apply_limits.value})",
            )
        for node in domain.descriptors.nodes:
            if first.descriptors.add(node) is not None:
                raise _file_error(
                    file,
                    f"duplicate descriptor composite key '{domain.name}.{node.final_key}'"
                    f" (also in {first.source})",
                )
        first.source = f"{first.source}, {file}"
    return RuleSet(domains, _digest(contents))


def _file_error(file: Path, message: str) -> RulesError:
    return RulesError(f"{file}:1: {message}", file=str(file), line=1)
