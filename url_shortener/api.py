"""Routes only: parse, call the service, shape the response."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError
from starlette.types import Scope

from common.errors import DomainError, status_for
from common.openapi import problem_responses
from url_shortener import qr
from url_shortener.cache import Mode
from url_shortener.deps import KeysDep, LinksDep, OwnerDep, SettingsDep
from url_shortener.errors import LinkNotFound
from url_shortener.schemas import (
    BulkCreate,
    BulkItemResult,
    BulkResult,
    KeyCreate,
    KeyCreated,
    KeyRead,
    LinkCreate,
    LinkPage,
    LinkRead,
    LinkStats,
    LinkUpdate,
)
from url_shortener.service import LinkService
from url_shortener.settings import UrlShortenerSettings
from url_shortener.store import Link
from url_shortener.targets import normalize_host
from url_shortener.visits import Visitor

# Every management route: a missing or wrong key (401), the database down (503).
api = APIRouter(prefix="/api", tags=["links"], responses=problem_responses(401, 503))
# A code in a management path: anything else is a 422 before it reaches SQL.
Code = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
redirects = APIRouter(tags=["redirects"])

CODE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def link_read(link: Link, settings: UrlShortenerSettings) -> LinkRead:
    return LinkRead(
        code=link.code,
        short_url=f"{settings.public_base_url}/{link.code}",
        url=link.url,
        created_at=link.created_at,
        expires_at=link.expires_at,
        max_visits=link.max_visits,
        redirect_status=link.redirect_status,
        tags=link.tags,
        visits=link.visits,
        has_password=link.password_hash is not None,
    )


# ---- management API -----------------------------------------------------------------------


@api.post("/links", status_code=201, responses=problem_responses(409, 429))
async def create_link(
    body: LinkCreate, links: LinksDep, owner: OwnerDep, settings: SettingsDep
) -> LinkRead:
    return link_read(await links.create(body, owner=owner), settings)


@api.post("/links/bulk", responses=problem_responses(429))
async def create_links(
    body: BulkCreate, request: Request, links: LinksDep, owner: OwnerDep, settings: SettingsDep
) -> BulkResult:
    invalid: dict[int, ValidationError] = {}
    parsed: list[tuple[int, LinkCreate]] = []
    for i, raw in enumerate(body.links):
        try:
            parsed.append((i, LinkCreate.model_validate(raw)))
        except ValidationError as exc:
            invalid[i] = exc
    outcomes: dict[int, Link | DomainError | ValidationError] = {
        **dict(await links.create_many(parsed, owner=owner)),
        **invalid,
    }
    results = []
    for index, outcome in sorted(outcomes.items()):
        if isinstance(outcome, Link):
            results.append(
                BulkItemResult(index=index, status=201, link=link_read(outcome, settings))
            )
        elif isinstance(outcome, ValidationError):
            errors = [
                {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in outcome.errors()
            ]
            results.append(
                BulkItemResult(
                    index=index,
                    status=422,
                    error={"title": "Validation failed", "errors": errors},
                )
            )
        else:
            assert isinstance(outcome, DomainError)
            status = status_for(outcome, request.app.state.error_statuses)
            results.append(
                BulkItemResult(
                    index=index,
                    status=status,
                    error={"title": outcome.title, "detail": outcome.detail},
                )
            )
    created = sum(1 for r in results if r.status == 201)
    return BulkResult(created=created, failed=len(results) - created, results=results)


@api.get("/links")
async def list_links(
    links: LinksDep,
    owner: OwnerDep,
    settings: SettingsDep,
    tag: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,40}$")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> LinkPage:
    items, next_cursor = await links.page(tag=tag, cursor=cursor, limit=limit, owner=owner)
    return LinkPage(items=[link_read(link, settings) for link in items], next_cursor=next_cursor)


@api.get("/links/{code}", responses=problem_responses(404))
async def get_link(code: Code, links: LinksDep, owner: OwnerDep, settings: SettingsDep) -> LinkRead:
    return link_read(await links.get(code, owner=owner), settings)


@api.patch("/links/{code}", responses=problem_responses(404))
async def update_link(
    code: Code, body: LinkUpdate, links: LinksDep, owner: OwnerDep, settings: SettingsDep
) -> LinkRead:
    return link_read(await links.update(code, body, owner=owner), settings)


@api.delete("/links/{code}", status_code=204, responses=problem_responses(404))
async def delete_link(code: Code, links: LinksDep, owner: OwnerDep) -> Response:
    await links.delete(code, owner=owner)
    return Response(status_code=204)


@api.get(
    "/links/{code}/stats",
    response_model=LinkStats,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        **problem_responses(404),
    },
)
async def link_stats(
    code: Code,
    links: LinksDep,
    owner: OwnerDep,
    format: Literal["json", "csv"] = "json",
) -> Response | dict[str, object]:
    if format == "csv":
        rows = await links.visits_csv(code, owner=owner)
        return StreamingResponse(
            rows,
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{code}-visits.csv"'},
        )
    return await links.stats(code, owner=owner)


@api.get(
    "/links/{code}/qr",
    response_class=Response,
    responses={
        200: {
            "description": "The QR code, as SVG or PNG (`format`).",
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **problem_responses(404),
    },
)
async def link_qr(
    code: Code,
    links: LinksDep,
    owner: OwnerDep,
    settings: SettingsDep,
    format: Literal["svg", "png"] = "svg",
    size: Annotated[int, Query(ge=qr.MIN_SIZE, le=qr.MAX_SIZE)] = 256,
) -> Response:
    link = await links.get(code, owner=owner)
    url = f"{settings.public_base_url}/{link.code}"
    body = await asyncio.to_thread(qr.render, url, fmt=format, size=size)  # ~0.1 s at 2048
    media = "image/svg+xml" if format == "svg" else "image/png"
    return Response(body, media_type=media, headers={"cache-control": "private, max-age=3600"})


@api.get("/keys", tags=["keys"], responses=problem_responses(403))
async def list_keys(keys: KeysDep, owner: OwnerDep) -> list[KeyRead]:
    """The working minted keys (admin key only): name, prefix, created, last used."""
    return [
        KeyRead(
            id=row.id,
            name=row.name,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )
        for row in await keys.list(owner=owner)
    ]


@api.post("/keys", status_code=201, tags=["keys"], responses=problem_responses(403))
async def create_key(body: KeyCreate, keys: KeysDep, owner: OwnerDep) -> KeyCreated:
    row, key = await keys.create(body.name, owner=owner)
    return KeyCreated(
        id=row.id, name=row.name, prefix=row.prefix, key=key, created_at=row.created_at
    )


@api.delete("/keys/{key_id}", status_code=204, tags=["keys"], responses=problem_responses(403, 404))
async def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)], keys: KeysDep, owner: OwnerDep
) -> Response:
    await keys.revoke(key_id, owner=owner)
    return Response(status_code=204)


# ---- redirects ----------------------------------------------------------------------------


def _location(url: str) -> str:
    """Header-safe Location: an international host name in its IDNA (punycode) form, as
    browsers send it to DNS, and the other non-ASCII characters percent-encoded (IRI -> URI)."""
    if url.isascii():
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.isascii():
        netloc = normalize_host(host)
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        parts = parts._replace(netloc=netloc)
    return quote(urlunsplit(parts), safe=":/?#[]@!$&'()*+,;=%~")


def _cache_control(status: int, settings: UrlShortenerSettings) -> str:
    # Permanent redirects may be cached briefly by browsers (fewer hits, fewer counted
    # visits); temporary ones never, so edits, expiry and analytics stay exact.
    if status in (301, 308) and settings.permanent_redirect_max_age:
        return f"private, max-age={settings.permanent_redirect_max_age}"
    return "private, no-store"


def _visitor(scope: Scope) -> Visitor:
    client = scope.get("client")
    return Visitor(peer=client[0] if client else None, headers=scope["headers"])


_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Protected link</title></head>
<body style="font-family:system-ui;max-width:24rem;margin:4rem auto">
<h1>This link is protected</h1>{error}
<form method="post" action="/{code}">
<label>Password <input type="password" name="password" autofocus required></label>
<button type="submit">Continue</button></form></body></html>"""


def _form(code: str, *, status: int = 200, error: str = "") -> HTMLResponse:
    message = f'<p role="alert" style="color:#b00">{html.escape(error)}</p>' if error else ""
    return HTMLResponse(
        _FORM.format(code=html.escape(code), error=message),
        status_code=status,
        headers={"cache-control": "no-store", "x-robots-tag": "noindex"},
    )


_REDIRECT: dict[str, Any] = {
    "description": "Redirect to the link's target (its `redirect_status`).",
    "headers": {
        "Location": {"description": "The target URL.", "schema": {"type": "string"}},
        "Cache-Control": {"schema": {"type": "string"}},
    },
}
_FORM_PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}


@redirects.head("/{code}", include_in_schema=False)
@redirects.get(
    "/{code}",
    response_class=HTMLResponse,  # (documents the password form; the route returns responses)
    responses={
        200: {"description": "The password form of a protected link.", **_FORM_PAGE},
        **{status: _REDIRECT for status in (301, 302, 307, 308)},
        **problem_responses(404, 410, 503),
    },
)
async def follow(code: str, request: Request) -> Response:
    # The hot path: services come from app.state directly rather than through Depends,
    # which costs a dependency-graph walk per request (see README, "Performance").
    scope = request.scope
    state = scope["app"].state
    links: LinkService = state.links
    settings: UrlShortenerSettings = state.settings
    if not CODE_RE.fullmatch(code):
        raise LinkNotFound(f"No link has the code '{code[:64]}'.")
    if scope["method"] == "HEAD":
        target = await links.resolve(code, mode=Mode.LOOK, visitor=None)
    else:
        target = await links.resolve(code, mode=Mode.VISIT, visitor=_visitor(scope))
    if target.needs_password:
        return _form(code)
    return Response(
        status_code=target.status,
        headers={
            "location": _location(target.url),
            "cache-control": _cache_control(target.status, settings),
        },
    )


@redirects.post(
    "/{code}",
    response_class=HTMLResponse,
    responses={
        303: {
            "description": "Right password: on to the target.",
            "headers": {"Location": _REDIRECT["headers"]["Location"]},
        },
        401: {"description": "Wrong password: the form again.", **_FORM_PAGE},
        **problem_responses(404, 405, 410, 413, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"password": {"type": "string"}},
                        "required": ["password"],
                    }
                }
            }
        }
    },
)
async def unlock(code: str, request: Request, links: LinksDep, settings: SettingsDep) -> Response:
    """The password form posts here; the right password redirects (303), a wrong one does not."""
    if not CODE_RE.fullmatch(code):
        raise LinkNotFound(f"No link has the code '{code[:64]}'.")
    body = (await request.body())[:4096].decode("utf-8", "replace")
    password = (parse_qs(body).get("password") or [""])[0]
    if not await links.check_password(code, password):  # 404 unknown, 405 no password
        return _form(code, status=401, error="Wrong password.")
    target = await links.resolve(code, mode=Mode.UNLOCKED, visitor=_visitor(request.scope))
    return Response(
        status_code=303,
        headers={"location": _location(target.url), "cache-control": "no-store"},
    )
