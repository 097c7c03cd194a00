"""RFC 9457 problem+json: every error leaves the suite in this one shape.

Services raise their own small domain exceptions (no HTTP in them); each app maps them to a
status once, with `install_problem_handlers(app, {NotFound: 404, ...})`.

One builder, `problem_body`, makes every problem's JSON: the exception handlers here answer with
`problem(...)` (a `JSONResponse`), pure ASGI middleware (the body limit, the rate limiter) with
`problem_message(...)`, the bytes and headers of the same document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"
log = structlog.get_logger("common.errors")


class DomainError(Exception):
    """Base of every service's domain exceptions; `detail` is safe to show to clients."""

    title: str | None = None

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-").replace("'", "")


# Titles for statuses whose phrase changed between Python versions (before 3.13: 413 "Request
# Entity Too Large", 422 "Unprocessable Entity"): a problem's `type` must not depend on them.
_TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}


def problem_body(
    status: int, detail: str | None = None, *, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The RFC 9457 document: `type` (`about:blank#<slug of the title>`), `title`, `status`,
    `detail` when given, then any extension members."""
    title = title or _TITLES.get(status) or HTTPStatus(status).phrase
    body: dict[str, Any] = {"type": f"about:blank#{_slug(title)}", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response."""
    return JSONResponse(
        problem_body(status, detail, title=title, **extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_CONTENT_TYPE,
    )


def problem_message(
    status: int,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The same document for pure ASGI code: its body, encoded as `JSONResponse` encodes it, and
    the raw response headers (content type and length first, then `headers`)."""
    body = json.dumps(
        problem_body(status, detail, title=title, **extra),
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode()
    return body, [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]


def too_large_detail(max_bytes: int) -> str:
    """The one 413 problem's detail, whether the length was declared or the body streamed."""
    return f"The request body is larger than {max_bytes} bytes."


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        out.append(
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str | None:
    """The `Allow` of a 405: every method of the route template the path matched, as the
    schema documents it plus the app's own routes outside it (`HEAD /{code}`, `/docs`).
    Starlette names the methods of one route only, while a resource may be several routes
    (`GET /{code}` and `POST /{code}`)."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return None
    documented = request.app.openapi().get("paths", {}).get(template, {})
    methods = {m.upper() for m in documented}
    for route in request.app.routes:
        if getattr(route, "path", None) == template:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(m for m in _METHODS if m in methods) or None


def status_for(exc: DomainError, statuses: Mapping[type[DomainError], int]) -> int:
    """The HTTP status a domain exception maps to (400 when unmapped)."""
    return next((s for cls, s in statuses.items() if isinstance(exc, cls)), 400)


def install_problem_handlers(
    app: FastAPI, statuses: Mapping[type[DomainError], int] | None = None
) -> None:
    """Map domain exceptions, validation failures and HTTP errors to problem+json."""
    mapping = dict(statuses or {})
    app.state.error_statuses = mapping

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DomainError)
        status = status_for(exc, mapping)
        headers = {}
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return problem(status, exc.detail, title=exc.title, headers=headers, **exc.extra)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(400, "The request body is not valid JSON.", title="Malformed JSON")
        whole_body = [e for e in errors if e["loc"] == ["body"]]
        if any(e["type"] == "missing" for e in whole_body):
            return problem(400, "This request needs a JSON body.", title="Malformed JSON")
        if whole_body and not _is_json(request.headers.get("content-type", "")):
            return problem(415, "Send the body as application/json.")
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body",)) or "request"
        return problem(422, f"{where}: {first['msg']}", title="Validation failed", errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = exc.headers
        if exc.status_code == 405:
            # Starlette names the methods of the first route that matched the path only; the
            # path may have several (GET /{code} and POST /{code} are two routes).
            allow = _allowed_methods(request)
            headers = {**(headers or {}), **({"Allow": allow} if allow else {})}
        return problem(exc.status_code, detail, headers=headers)

    async def on_database_down(request: Request, exc: Exception) -> JSONResponse:
        log.error("database_unavailable", path=request.url.path, error=str(exc)[:200])
        return problem(
            503,
            "The database is unavailable; try again shortly.",
            title="Service Unavailable",
            headers={"Retry-After": "5"},
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem(500, "An unexpected error occurred; it has been logged.")

    app.add_exception_handler(DomainError, on_domain)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    # A database that cannot be reached is a dependency failure (503), not a bug (500).
    app.add_exception_handler(OperationalError, on_database_down)
    app.add_exception_handler(InterfaceError, on_database_down)
    app.add_exception_handler(Exception, on_unexpected)
