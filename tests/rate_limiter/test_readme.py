"""Every Python snippet in rate_limiter/README.md runs as written (and does what it says)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

README = Path(__file__).resolve().parents[2] / "rate_limiter" / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def run(snippet: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(snippet, str(README), "exec"), namespace)
    return namespace


def test_the_readme_has_its_snippets() -> None:
    assert len(SNIPPETS) == 2


def test_the_library_snippet_runs(capsys: pytest.CaptureFixture[str]) -> None:
    [library] = [s for s in SNIPPETS if "async def main" in s]
    run(library)
    assert "busy, retry in" in capsys.readouterr().out


async def test_the_protect_your_own_app_snippet_protects_an_app(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [middleware] = [s for s in SNIPPETS if "RateLimitMiddleware" in s]
    monkeypatch.setenv("REDIS_URL", redis_url)
    app = run(middleware)["app"]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            codes = [(await client.post("/api/links")).status_code for _ in range(11)]
    # The burst of 10 for one client address, then a 429 (problem+json, Retry-After).
    assert codes == [200] * 10 + [429]
