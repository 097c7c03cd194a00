"""The shortener's schema documents what it answers (schemathesis checks the rest in
tests/contract)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.url_shortener.conftest import ADMIN


def test_redirects_document_their_real_statuses(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    follow = paths["/{code}"]["get"]["responses"]
    assert {"200", "301", "302", "307", "308", "404", "410"} <= set(follow)
    assert "text/html" in follow["200"]["content"]  # the password form
    assert "Location" in follow["302"]["headers"]
    unlock = paths["/{code}"]["post"]
    assert {"303", "401", "404", "410", "429"} <= set(unlock["responses"])
    assert "application/x-www-form-urlencoded" in unlock["requestBody"]["content"]


def test_management_routes_need_the_api_key_scheme(app: FastAPI) -> None:
    schema = app.openapi()
    assert schema["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"
    create = schema["paths"]["/api/links"]["post"]
    assert create["security"] == [{"ApiKey": []}]
    assert {"401", "409", "429"} <= set(create["responses"])


async def test_405_names_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    for path, allow in (
        ("/abc", "GET, HEAD, POST"),
        ("/api/links", "GET, POST"),
        ("/api/links/abc", "GET, PATCH, DELETE"),
    ):
        resp = await client.request("PUT", path)
        assert resp.status_code == 405 and resp.headers["allow"] == allow, path


async def test_a_key_id_past_sql_integers_is_422_not_500(client: httpx.AsyncClient) -> None:
    """Found by `make fuzz`: the id reached SQL, which cannot hold it (a 500)."""
    resp = await client.delete("/api/keys/671765406519877029467692912215064576", headers=ADMIN)
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
