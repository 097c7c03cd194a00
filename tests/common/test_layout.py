"""The suite's import rules, checked on the source: benchmarks never import the tests (what
both need lives in common/processes.py), common/ imports no service, and a service imports no
other service except rate_limiter's exported names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.processes import ROOT

SERVICES = {"url_shortener", "task_queue", "chat", "rate_limiter", "notifications", "feed",
            "ride_sharing"}  # fmt: skip


def _imports(path: Path) -> set[tuple[str, tuple[str, ...]]]:
    """(module, names) for every import in the file, nested ones included."""
    found: set[tuple[str, tuple[str, ...]]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, ()) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module, tuple(alias.name for alias in node.names)))
    return found


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", _files("benchmarks"), ids=lambda p: p.name)
def test_benchmarks_do_not_import_the_tests(path: Path) -> None:
    bad = [m for m, _ in _imports(path) if m == "tests" or m.startswith("tests.")]
    assert not bad, f"{path.name} imports {bad}: move what it needs to common/processes.py"


def test_common_imports_no_service() -> None:
    for path in _files("common"):
        bad = [m for m, _ in _imports(path) if m.split(".")[0] in SERVICES]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_services_import_only_rate_limiters_exports() -> None:
    import rate_limiter

    exported = set(rate_limiter.__all__)
    for service in sorted(SERVICES):
        for path in _files(service) if (ROOT / service).is_dir() else []:
            for module, names in _imports(path):
                top = module.split(".")[0]
                if top not in SERVICES or top == service:
                    continue
                where = path.relative_to(ROOT)
                assert module == "rate_limiter", f"{where} imports {module}"
                assert set(names) <= exported, f"{where}: {set(names) - exported} not exported"
