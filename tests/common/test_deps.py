from contextlib import asynccontextmanager
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI

from common.deps import from_state


async def test_from_state_reads_what_the_lifespan_put_there() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        app.state.greeting = "hello"
        yield

    app = FastAPI(lifespan=lifespan)
    Greeting = Annotated[str, Depends(from_state("greeting"))]

    @app.get("/")
    async def index(greeting: Greeting) -> dict[str, str]:
        return {"greeting": greeting}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/")).json() == {"greeting": "hello"}
