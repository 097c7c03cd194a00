"""The shared layers' answers are in the schema, in the shape they are sent."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import FastAPI, Security
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from common.app import build_app
from common.health import HealthChecks
from common.openapi import API_KEY, PROBLEM_REF, problem_responses
from common.settings import ServiceSettings


class Thing(BaseModel):
    name: str


def make_app() -> FastAPI:
    app = build_app(
        ServiceSettings(service_name="demo", log_level="WARNING"),
        title="demo",
        registry=CollectorRegistry(),
        checks=HealthChecks(),
    )

    @app.post("/things", status_code=201, responses=problem_responses(409))
    async def create(thing: Thing, key: Annotated[str | None, Security(API_KEY)]) -> Thing:
        return thing

    @app.get("/things/{name}", responses=problem_responses(404))
    async def read(name: str) -> Thing:
        return Thing(name=name)

    @app.delete("/things/{name}", status_code=204)
    async def delete(name: str) -> None:
        return None

    return app


def _problem(response: dict[str, Any]) -> dict[str, Any]:
    return response["content"]["application/problem+json"]["schema"]


def test_declared_and_shared_errors_are_problem_json() -> None:
    schema = make_app().openapi()
    assert schema["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    create = schema["paths"]["/things"]["post"]["responses"]
    # Declared by the route (409), and what the shared layers answer to any JSON body.
    assert set(create) == {"201", "400", "409", "413", "415", "422"}
    for status in ("400", "409", "413", "415", "422"):
        assert _problem(create[status]) == {"$ref": PROBLEM_REF}
        assert "application/json" not in create[status]["content"]
    read = schema["paths"]["/things/{name}"]["get"]["responses"]
    assert set(read) == {"200", "404", "422"}  # no body: no 400, 413 or 415


def test_api_key_is_a_security_scheme() -> None:
    schema = make_app().openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": API_KEY.model.description,
    }
    assert schema["paths"]["/things"]["post"]["security"] == [{"ApiKey": []}]


def test_retry_after_is_documented_on_429_and_503() -> None:
    responses = problem_responses(429, 503, 404)
    assert "Retry-After" in responses[429]["headers"]
    assert "Retry-After" in responses[503]["headers"]
    assert "headers" not in responses[404]


async def test_bodies_that_are_not_json_are_400_or_415() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        empty = await client.post("/things")
        as_text = await client.post(
            "/things", content=b'{"name": "a"}', headers={"content-type": "text/plain"}
        )
        wrong_shape = await client.post("/things", json=["a"])
    assert empty.status_code == 400 and empty.json()["title"] == "Malformed JSON"
    assert as_text.status_code == 415
    assert as_text.headers["content-type"] == "application/problem+json"
    assert wrong_shape.status_code == 422


async def test_405_allows_every_method_of_the_path() -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        resp = await client.put("/things/x")
        collection = await client.get("/things")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, DELETE"  # two routes, one path
    assert resp.headers["content-type"] == "application/problem+json"
    assert collection.headers["allow"] == "POST"
