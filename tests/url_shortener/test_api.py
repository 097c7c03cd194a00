"""The management API through its real interface (ASGI), on real Redis and SQL."""

import re
import struct
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.url_shortener.conftest import ADMIN, assert_problem, make_link


async def test_create_returns_the_full_link(client: httpx.AsyncClient) -> None:
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    link = await make_link(
        client, url="https://example.com/x", tags=["b", "a", "a"], expires_at=expires,
        max_visits=5, redirect_status=301,
    )  # fmt: skip
    assert len(link["code"]) == 7
    assert link["short_url"] == f"https://sho.rt/{link['code']}"
    assert link["url"] == "https://example.com/x"
    assert link["tags"] == ["a", "b"]
    assert link["max_visits"] == 5 and link["redirect_status"] == 301
    assert link["visits"] == 0 and link["has_password"] is False
    assert link["created_at"] and link["expires_at"]


async def test_management_needs_a_valid_key(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/api/links", json={"url": "https://e.com"}), 401)
    resp = await client.get("/api/links", headers={"x-api-key": "wrong"})
    assert "not valid" in assert_problem(resp, 401)["detail"]


async def test_minted_keys_work_and_are_stored_hashed(client: httpx.AsyncClient, app) -> None:  # type: ignore[no-untyped-def]
    resp = await client.post("/api/keys", json={"name": "ci"}, headers=ADMIN)
    assert resp.status_code == 201
    key = resp.json()["key"]
    assert key.startswith("us_") and resp.json()["prefix"] == key[:10]
    resp = await client.post(
        "/api/links", json={"url": "https://example.com"}, headers={"x-api-key": key}
    )
    assert resp.status_code == 201
    from sqlalchemy import text

    async with app.state.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT key_hash FROM api_keys"))).scalar_one()
    assert key not in stored and len(stored) == 64


async def test_alias_is_case_sensitive_and_unique(client: httpx.AsyncClient) -> None:
    await make_link(client, alias="Promo")
    await make_link(client, alias="promo")
    resp = await client.post(
        "/api/links", json={"url": "https://e.com", "alias": "Promo"}, headers=ADMIN
    )
    assert "already taken" in assert_problem(resp, 409)["detail"]


@pytest.mark.parametrize(
    "alias",
    ["api", "docs", "metrics", "healthz", "readyz", "ab", "a b", "ü-link", "🙂🙂🙂", "\u202e"],
)
async def test_bad_aliases_are_422(client: httpx.AsyncClient, alias: str) -> None:
    resp = await client.post(
        "/api/links", json={"url": "https://e.com", "alias": alias}, headers=ADMIN
    )
    assert_problem(resp, 422)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://e.com",
        "https://u:p@e.com",
        "https://sho.rt/loop",
        "https://malware.test/",
        "https://e.com/" + "x" * 2100,
    ],
)
async def test_refused_targets_are_422_with_a_reason(client: httpx.AsyncClient, url: str) -> None:
    resp = await client.post("/api/links", json={"url": url}, headers=ADMIN)
    assert assert_problem(resp, 422)["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"url": ', 400),
        (b"[1, 2]", 422),
        (b'{"url": 5}', 422),
        (b'{"url": "https://e.com", "max_visits": "many"}', 422),
        (b'{"url": "https://e.com", "max_visits": 0}', 422),
        (b'{"url": "https://e.com", "redirect_status": 200}', 422),
        (b'{"url": "https://e.com", "expires_at": "yesterday"}', 422),
        (b'{"url": "https://e.com", "expires_at": "2001-01-01T00:00:00Z"}', 422),
        (b'{"url": "https://e.com", "expires_at": "9999-12-31T23:59:59-14:00"}', 422),
        (b'{"url": "https://e.com", "tags": ["ok", "not ok"]}', 422),
        (b'{"url": "https://e.com", "surprise": 1}', 422),
        (b'{"url": "https://e.com", "alias": null, "password": ""}', 422),
        (b"\xff\xfe\x00garbage", 400),
        (b'{"url": "' + b"x" * 2_000_000 + b'"}', 413),
    ],
)
async def test_bad_bodies_are_4xx_problems(
    client: httpx.AsyncClient, body: bytes, status: int
) -> None:
    resp = await client.post(
        "/api/links", content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    assert_problem(resp, status)


async def test_get_patch_delete(client: httpx.AsyncClient) -> None:
    link = await make_link(client, tags=["old"], max_visits=3, password="pw")
    code = link["code"]
    resp = await client.get(f"/api/links/{code}", headers=ADMIN)
    assert resp.json()["has_password"] is True
    resp = await client.patch(
        f"/api/links/{code}",
        json={"url": "https://example.org/new", "tags": ["new"], "max_visits": None,
              "password": None, "redirect_status": 307},
        headers=ADMIN,
    )  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["url"] == "https://example.org/new" and body["tags"] == ["new"]
    assert body["max_visits"] is None and body["has_password"] is False
    assert body["redirect_status"] == 307
    assert_problem(
        await client.patch(f"/api/links/{code}", json={"url": "ftp://x"}, headers=ADMIN), 422
    )
    assert_problem(await client.patch(f"/api/links/{code}", json={"url": None}, headers=ADMIN), 422)
    assert (await client.delete(f"/api/links/{code}", headers=ADMIN)).status_code == 204
    assert_problem(await client.get(f"/api/links/{code}", headers=ADMIN), 404)
    assert_problem(await client.delete(f"/api/links/{code}", headers=ADMIN), 404)
    assert_problem(await client.patch("/api/links/nope", json={}, headers=ADMIN), 404)


async def test_list_paginates_with_a_cursor_and_filters_by_tag(client: httpx.AsyncClient) -> None:
    made = [await make_link(client, tags=["even" if i % 2 == 0 else "odd"]) for i in range(7)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/links", params=params, headers=ADMIN)).json()
        seen += [item["code"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [link["code"] for link in reversed(made)]  # newest first, no gaps
    evens = (await client.get("/api/links?tag=even", headers=ADMIN)).json()["items"]
    assert {i["code"] for i in evens} == {m["code"] for m in made[::2]}
    assert_problem(await client.get("/api/links?cursor=%%%", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links?limit=0", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links?limit=1000", headers=ADMIN), 422)


async def test_bulk_reports_each_outcome(client: httpx.AsyncClient) -> None:
    await make_link(client, alias="taken")
    items = [
        {"url": "https://example.com/1"},
        {"url": "ftp://example.com"},
        {"url": "https://example.com/3", "alias": "taken"},
        {"url": "https://example.com/4", "alias": "fresh"},
        {"url": "https://example.com/5", "alias": "fresh"},
        {"nope": 1},
        {"url": "https://example.com/7", "alias": "api"},
    ]
    resp = await client.post("/api/links/bulk", json={"links": items}, headers=ADMIN)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [201, 422, 409, 201, 409, 422, 422]
    assert [r["index"] for r in body["results"]] == list(range(7))
    assert body["created"] == 2 and body["failed"] == 5
    assert body["results"][3]["link"]["code"] == "fresh"
    assert "url" in str(body["results"][5]["error"])


async def test_bulk_takes_up_to_1000(client: httpx.AsyncClient) -> None:
    many = [{"url": f"https://example.com/{i}"} for i in range(1000)]
    resp = await client.post("/api/links/bulk", json={"links": many}, headers=ADMIN)
    body = resp.json()
    assert body["created"] == 1000
    assert len({r["link"]["code"] for r in body["results"]}) == 1000
    resp = await client.post("/api/links/bulk", json={"links": [*many, many[0]]}, headers=ADMIN)
    assert_problem(resp, 422)
    assert_problem(await client.post("/api/links/bulk", json={"links": []}, headers=ADMIN), 422)


async def test_concurrent_creates_never_collide(client: httpx.AsyncClient) -> None:
    import asyncio

    links = await asyncio.gather(*(make_link(client) for _ in range(200)))
    assert len({link["code"] for link in links}) == 200


@pytest.mark.parametrize("size", [64, 77, 300, 2048])
def test_a_qr_png_is_exactly_the_size_asked_and_draws_the_code(size: int) -> None:
    import segno

    from url_shortener import qr

    png = qr.render("https://sho.rt/abcdefg", fmt="png", size=size)
    assert struct.unpack(">IIBB", png[16:26]) == (size, size, 8, 0)  # 8-bit grayscale
    idat = png.index(b"IDAT")
    length = struct.unpack(">I", png[idat - 4 : idat])[0]
    pixels = zlib.decompress(png[idat + 4 : idat + 4 + length])
    assert len(pixels) == size * (size + 1)
    matrix = [
        list(r) for r in segno.make("https://sho.rt/abcdefg", error="m").matrix_iter(border=4)
    ]
    n = len(matrix)
    for my, mx in [(0, 0), (4, 4), (5, 5), (6, 6), (n // 2, n // 2), (n - 5, 4)]:
        y, x = (my * size + size // 2) // n, (mx * size + size // 2) // n  # a module's middle
        assert pixels[y * (size + 1) + 1 + x] == (0 if matrix[my][mx] else 255)


async def test_qr_codes(client: httpx.AsyncClient) -> None:
    code = (await make_link(client))["code"]
    svg = await client.get(f"/api/links/{code}/qr", headers=ADMIN)
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.lstrip().startswith(b"<?xml") or b"<svg" in svg.content[:200]
    png = await client.get(f"/api/links/{code}/qr?format=png&size=300", headers=ADMIN)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png.content[16:24]) == (300, 300)
    assert re.search(rb'<svg[^>]* width="256(\.0)?" height="256(\.0)?"', svg.content)
    assert_problem(await client.get(f"/api/links/{code}/qr?format=gif", headers=ADMIN), 422)
    assert_problem(await client.get(f"/api/links/{code}/qr?size=99999", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links/missing/qr", headers=ADMIN), 404)


async def test_openapi_and_docs_are_not_shadowed_by_codes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 200
    assert (await client.get("/docs")).status_code == 200
    assert (await client.get("/metrics")).status_code == 200


async def test_hostile_paths_and_queries_are_4xx_not_500(client: httpx.AsyncClient) -> None:
    import base64

    huge = base64.urlsafe_b64encode(b"9" * 40).decode().rstrip("=")
    assert_problem(await client.get(f"/api/links?cursor={huge}", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links?cursor=LTE", headers=ADMIN), 422)  # "-1"
    assert_problem(await client.get("/api/links/%00", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links/a%20b/stats", headers=ADMIN), 422)
    assert_problem(await client.get("/api/links?tag=%00", headers=ADMIN), 422)
    code = (await make_link(client))["code"]
    far = {"expires_at": "9999-12-31T23:59:59-14:00"}
    assert_problem(await client.patch(f"/api/links/{code}", json=far, headers=ADMIN), 422)


async def test_keys_are_listed_without_their_secrets(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/keys", headers=ADMIN)).json() == []
    made = (await client.post("/api/keys", json={"name": "ci"}, headers=ADMIN)).json()
    other = (await client.post("/api/keys", json={"name": "old"}, headers=ADMIN)).json()
    await client.delete(f"/api/keys/{other['id']}", headers=ADMIN)
    [listed] = (await client.get("/api/keys", headers=ADMIN)).json()
    assert listed["name"] == "ci" and listed["prefix"] == made["prefix"]
    assert listed["last_used_at"] is None and listed["created_at"]
    assert made["key"] not in str(listed) and set(listed) == {
        "id", "name", "prefix", "created_at", "last_used_at"
    }  # fmt: skip
    mine = {"x-api-key": made["key"]}
    assert (await client.get("/api/links", headers=mine)).status_code == 200
    [listed] = (await client.get("/api/keys", headers=ADMIN)).json()
    assert listed["last_used_at"] is not None
    assert_problem(await client.get("/api/keys", headers=mine), 403)
    assert_problem(await client.get("/api/keys"), 401)


async def test_private_targets_are_refused_unless_allowed(settings) -> None:  # type: ignore[no-untyped-def]
    from url_shortener.app import create_app

    for allowed, status in ((False, 422), (True, 201)):
        app = create_app(settings.model_copy(update={"allow_private_targets": allowed}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
                for url in ("http://169.254.169.254/latest/meta-data/", "http://[::1]:8080/"):
                    resp = await c.post("/api/links", json={"url": url}, headers=ADMIN)
                    assert resp.status_code == status, resp.text


async def test_minted_keys_see_only_their_own_links_and_cannot_mint(
    client: httpx.AsyncClient,
) -> None:
    admins = (await make_link(client))["code"]
    minted = (await client.post("/api/keys", json={"name": "team"}, headers=ADMIN)).json()
    team = {"x-api-key": minted["key"]}
    resp = await client.post("/api/links", json={"url": "https://example.com/t"}, headers=team)
    ours = resp.json()["code"]
    # Someone else's link does not exist, as far as this key can tell.
    for method, path in [
        ("GET", f"/api/links/{admins}"),
        ("PATCH", f"/api/links/{admins}"),
        ("DELETE", f"/api/links/{admins}"),
        ("GET", f"/api/links/{admins}/stats"),
        ("GET", f"/api/links/{admins}/qr"),
    ]:
        body: dict[str, Any] | None = {} if method == "PATCH" else None
        assert_problem(await client.request(method, path, headers=team, json=body), 404)
    listed = (await client.get("/api/links", headers=team)).json()["items"]
    assert [i["code"] for i in listed] == [ours]
    everything = (await client.get("/api/links", headers=ADMIN)).json()["items"]
    assert {i["code"] for i in everything} == {admins, ours}
    assert (await client.get(f"/api/links/{ours}", headers=ADMIN)).status_code == 200
    assert_problem(await client.post("/api/keys", json={"name": "x"}, headers=team), 403)
    assert_problem(await client.delete(f"/api/keys/{minted['id']}", headers=team), 403)


async def test_revoked_keys_stop_working_at_once(client: httpx.AsyncClient) -> None:
    minted = (await client.post("/api/keys", json={"name": "leaked"}, headers=ADMIN)).json()
    key = {"x-api-key": minted["key"]}
    assert (await client.get("/api/links", headers=key)).status_code == 200
    assert (await client.delete(f"/api/keys/{minted['id']}", headers=ADMIN)).status_code == 204
    assert_problem(await client.get("/api/links", headers=key), 401)
    assert_problem(await client.delete(f"/api/keys/{minted['id']}", headers=ADMIN), 404)
    assert_problem(await client.delete("/api/keys/0", headers=ADMIN), 422)
