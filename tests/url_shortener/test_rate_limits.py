"""Link creation is rate limited per client (rate_limiter's middleware on the real Redis)."""

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.url_shortener.conftest import ADMIN, assert_problem
from url_shortener.app import create_app
from url_shortener.settings import UrlShortenerSettings


@pytest.fixture
async def limited(settings: UrlShortenerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"create_rate_per_minute": 5}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1000))
        async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
            yield c


async def test_creation_is_limited_with_problem_and_draft_headers(
    limited: httpx.AsyncClient,
) -> None:
    body = {"url": "https://example.com/"}
    for _ in range(5):
        resp = await limited.post("/api/links", json=body, headers=ADMIN)
        assert resp.status_code == 201
        assert "ratelimit-policy" in resp.headers and "ratelimit" in resp.headers
    refused = await limited.post("/api/links", json=body, headers=ADMIN)
    problem = assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert problem["title"]
    # Redirects and reads are not limited.
    assert (await limited.get("/api/links", headers=ADMIN)).status_code == 200
    assert "ratelimit" not in (await limited.get("/api/links", headers=ADMIN)).headers


async def test_limit_is_per_client(settings: UrlShortenerSettings) -> None:
    app = create_app(settings.model_copy(update={"create_rate_per_minute": 1}))
    async with app.router.lifespan_context(app):
        for ip in ("192.0.2.1", "192.0.2.2"):
            transport = httpx.ASGITransport(app=app, client=(ip, 1000))
            async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
                ok = await c.post("/api/links", json={"url": "https://e.com/"}, headers=ADMIN)
                assert ok.status_code == 201
                again = await c.post("/api/links", json={"url": "https://e.com/"}, headers=ADMIN)
                assert again.status_code == 429


async def test_password_guessing_is_limited(settings: UrlShortenerSettings) -> None:
    app = create_app(settings.model_copy(update={"unlock_rate_per_minute": 3}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 1000))
        async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
            link = await c.post(
                "/api/links", json={"url": "https://e.com/", "password": "right"}, headers=ADMIN
            )
            code = link.json()["code"]
            for _ in range(3):
                assert (await c.post(f"/{code}", data={"password": "guess"})).status_code == 401
            refused = await c.post(f"/{code}", data={"password": "right"})
            assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
