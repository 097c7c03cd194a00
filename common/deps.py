"""Dependencies every service needs: objects its lifespan put on `app.state`.

LinksDep = Annotated[LinkService, Depends(from_state("links"))]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request


def from_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency returning `request.app.state.<name>` (async: no thread-pool hop)."""

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"state_{name}"
    return dependency
