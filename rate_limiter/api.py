"""Routes only: parse, call the service, shape the response."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query, Response

from common.openapi import problem_responses
from rate_limiter.deps import RulesDep, ServiceDep
from rate_limiter.errors import InvalidRequest
from rate_limiter.headers import rate_limit_headers
from rate_limiter.rules import Level, Node
from rate_limiter.schemas import (
    CheckRequest,
    CheckResponse,
    DomainRead,
    ReleaseRequest,
    ReleaseResponse,
    RuleRead,
    RulesRead,
)

api = APIRouter(prefix="/api", tags=["rate limits"])


@api.post("/check", responses=problem_responses(404, 502))
async def check(body: CheckRequest, service: ServiceDep, response: Response) -> CheckResponse:
    """Decide on `cost` for the descriptors; always 200, the verdict is in the body."""
    result = await service.check(
        domain=body.domain, descriptors=body.to_descriptors(), cost=body.cost
    )
    response.headers.update(rate_limit_headers(result.applied()))
    if not result.allowed and not math.isinf(result.retry_after):
        response.headers["Retry-After"] = str(max(1, math.ceil(result.retry_after)))
    return CheckResponse.of(result)


@api.post("/release", responses=problem_responses(404, 502))
async def release(body: ReleaseRequest, service: ServiceDep) -> ReleaseResponse:
    """Give back a concurrency lease taken by a check."""
    count = await service.release(domain=body.domain, entries=body.entries(), lease=body.lease)
    return ReleaseResponse(released=count)


@api.get("/usage", responses=problem_responses(404, 502))
async def usage(
    service: ServiceDep,
    response: Response,
    domain: Annotated[str, Query(min_length=1, max_length=255)],
    key: Annotated[list[str], Query(min_length=1, max_length=32)],
    value: Annotated[list[str] | None, Query(max_length=32)] = None,
) -> CheckResponse:
    """A key's state without consuming: `?domain=api&key=api_key&value=k1&key=route&value=...`."""
    values = value or []
    if len(values) != len(key):
        raise InvalidRequest("give one value per key (an empty value is allowed: value=)")
    result = await service.usage(domain=domain, entries=list(zip(key, values, strict=True)))
    response.headers.update(rate_limit_headers(result.applied()))
    return CheckResponse.of(result)


def _flatten(level: Level, path: str = "") -> list[tuple[str, Node]]:
    out: list[tuple[str, Node]] = []
    for node in level.nodes:
        here = f"{path}{node.key}={node.value if node.value is not None else '*'}"
        out.append((here, node))
        out.extend(_flatten(node.children, here + " > "))
    return out


@api.get("/rules")
async def rules(watcher: RulesDep) -> RulesRead:
    """The rules in force, where each came from, and the last rejected edit if any."""
    current = watcher.current
    domains = []
    for domain in sorted(current.domains.values(), key=lambda d: d.name):
        nodes = _flatten(domain.descriptors)
        rows = [
            RuleRead(descriptor=path, **node.rule.as_dict())
            for path, node in nodes
            if node.rule is not None
        ]
        allowlisted = [
            path for path, node in nodes if node.rule is None and not node.children.nodes
        ]
        domains.append(
            DomainRead(
                domain=domain.name, source=domain.source, rules=rows, allowlisted=allowlisted
            )
        )
    return RulesRead(
        path=str(watcher.path),
        loaded_at=current.loaded_at,
        reloads=watcher.reloads,
        last_error=watcher.last_error,
        domains=domains,
    )
