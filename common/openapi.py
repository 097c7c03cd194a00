"""An OpenAPI schema that tells the truth: what a generated client or a contract tester reads.

- `problem_responses(404, 409, ...)`: the errors a route answers, each documented as
  `application/problem+json` with the one `Problem` schema (declared here, once):

      @api.get("/links/{code}", responses=problem_responses(404))

- `API_KEY`: the `X-API-Key` header as a security scheme (the docs page's Authorize button);
  a dependency reads it with `Security(API_KEY)`.
- `install_openapi(app)` (called by `common.app.build_app`): adds to every operation the
  errors the shared layers answer whatever the route: 422 for invalid input (problem+json,
  not FastAPI's own shape); for a JSON body, 400 when it is missing or malformed, 415 when it
  is sent as another media type; 413 for any body over the size limit.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.security import APIKeyHeader

from common.errors import PROBLEM_CONTENT_TYPE

PROBLEM_REF = "#/components/schemas/Problem"
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details. Extension members (such as `errors` for a "
    "validation failure, `retry_after` for a refusal) may follow the standard ones.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "Identifies the kind of problem."},
        "title": {"type": "string", "description": "Short summary of the kind of problem."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What went wrong with this request."},
    },
    "additionalProperties": True,
}

# What each status means across the suite (a route may say more with `description=`).
_DESCRIPTIONS = {
    400: "Malformed request: the JSON body is missing or not valid JSON.",
    401: "Missing or invalid API key.",
    403: "The API key is valid but may not do this.",
    404: "Not found.",
    409: "Conflict with the current state.",
    410: "Gone: it existed and does not any more.",
    413: "The request body is larger than the service accepts.",
    415: "The body is not sent as application/json.",
    422: "Invalid input: the problem's `errors` lists each field and why.",
    429: "Too many requests: wait `Retry-After` seconds.",
    502: "A dependency failed this one call.",
    503: "A dependency is unavailable: try again after `Retry-After` seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again (absent when waiting cannot help).",
        "schema": {"type": "integer", "minimum": 0},
    }
}

API_KEY = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="The service's management key (its admin key, or one minted with it).",
    auto_error=False,  # the service decides, and answers 401 problem+json itself
)


def problem_response(status: int, description: str | None = None) -> dict[str, Any]:
    """One problem+json response object (for `responses=`)."""
    response: dict[str, Any] = {
        "description": description or _DESCRIPTIONS.get(status) or HTTPStatus(status).phrase,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status in (429, 503):
        response["headers"] = _RETRY_AFTER
    return response


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status as problem+json with the `Problem` schema."""
    return {status: problem_response(status) for status in statuses}


def _has_json_body(operation: dict[str, Any]) -> bool:
    content = operation.get("requestBody", {}).get("content", {})
    return any(t == "application/json" or t.endswith("+json") for t in content)


def _truthful(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    # FastAPI's own 422 shape is never sent: the suite's handler answers problem+json.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                responses["422"] = problem_response(422)
            if "requestBody" not in operation:
                continue
            extra = [413]
            if _has_json_body(operation):
                extra += [400, 415, 422]
            for status in extra:
                responses.setdefault(str(status), problem_response(status))
    return schema


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and `/openapi.json`) document what the shared layers answer."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _truthful(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
