"""Envoy's rate limit API over gRPC: `envoy.service.ratelimit.v3.RateLimitService/
ShouldRateLimit`, the call Envoy's ratelimit filter makes, served beside the HTTP API by
the same `RateLimitService` (same rules, same decisions, same metrics).

The messages are a wire-compatible subset of Envoy's (`envoy_api/*.proto`, generated code
checked in beside them). A response is shaped as Envoy's own service shapes it: one status
per descriptor (`OK` with no limit when no rule applies, `OK` with the largest remaining for
an unlimited one), `overall_code` from the same verdict as the HTTP API, and, when
`RATE_LIMITER_LIMIT_RESPONSE_HEADERS` is on (Envoy's LIMIT_RESPONSE_HEADERS_ENABLED),
`RateLimit-Limit`, `-Remaining` and `-Reset` headers for the descriptor with the least left;
when `RATE_LIMITER_RESPONSE_DYNAMIC_METADATA` is on (Envoy's RESPONSE_DYNAMIC_METADATA),
`dynamic_metadata` as Envoy's sets it: the request's domain, descriptors and hits, and the
`metadata` of the rules whose descriptors passed (which Envoy's filter puts under
`envoy.filters.http.ratelimit`, for a route to read: the quota-mode way to pick a backend).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog
from google.protobuf.duration_pb2 import Duration

from rate_limiter.envoy_api import ratelimit_pb2, rls_pb2, rls_pb2_grpc
from rate_limiter.envoy_api.base_pb2 import HeaderValue
from rate_limiter.errors import InvalidCost
from rate_limiter.service import CheckResult, Descriptor, RateLimitService, RuleDecision

log = structlog.get_logger("rate_limiter.envoy_grpc")

Response = rls_pb2.RateLimitResponse
UNITS = {
    1: Response.RateLimit.SECOND,
    60: Response.RateLimit.MINUTE,
    3600: Response.RateLimit.HOUR,
    86400: Response.RateLimit.DAY,
    7 * 86400: Response.RateLimit.WEEK,
    30 * 86400: Response.RateLimit.MONTH,
    365 * 86400: Response.RateLimit.YEAR,
}
MAX_UINT32 = 2**32 - 1
HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def _shown(decisions: list[RuleDecision]) -> RuleDecision:
    """The rule that speaks for a descriptor (several apply only in `every_level` files):
    the one that refused it, else the one with the least left."""
    refused = [d for d in decisions if not d.enforced_allowed]
    return min(refused or decisions, key=lambda d: d.decision.remaining)


def descriptor_status(result: CheckResult, index: int) -> Response.DescriptorStatus:
    """Envoy's status for one descriptor."""
    if index in result.unlimited:
        return Response.DescriptorStatus(code=Response.OK, limit_remaining=MAX_UINT32)
    decisions = result.of_descriptor(index)
    if not decisions:
        return Response.DescriptorStatus(code=Response.OK)
    d = _shown(decisions)
    period = round(d.limit.period)
    return Response.DescriptorStatus(
        code=Response.OK if d.enforced_allowed else Response.OVER_LIMIT,
        current_limit=Response.RateLimit(
            name=d.rule,
            requests_per_unit=d.limit.capacity,
            unit=UNITS.get(period, Response.RateLimit.UNKNOWN),
        ),
        limit_remaining=max(0, d.decision.remaining),
        duration_until_reset=Duration(seconds=max(0, math.ceil(d.decision.reset_after))),
    )


OVERRIDE_UNITS = {
    Response.RateLimit.SECOND: "second",
    Response.RateLimit.MINUTE: "minute",
    Response.RateLimit.HOUR: "hour",
    Response.RateLimit.DAY: "day",
    Response.RateLimit.WEEK: "week",
    Response.RateLimit.MONTH: "month",
    Response.RateLimit.YEAR: "year",
}


def _override(d: ratelimit_pb2.RateLimitDescriptor) -> tuple[int, str] | None:
    """A descriptor's limit override, when it has one with a known unit."""
    if not d.HasField("limit") or d.limit.unit not in OVERRIDE_UNITS:
        return None
    return d.limit.requests_per_unit, OVERRIDE_UNITS[d.limit.unit]  # type: ignore[index]


def _descriptor_fields(d: ratelimit_pb2.RateLimitDescriptor) -> dict[str, Any]:
    """One request descriptor as Envoy's dynamic metadata shows it."""
    fields: dict[str, Any] = {"entries": [f"{e.key}={e.value}" for e in d.entries]}
    if d.HasField("limit"):
        units = Response.RateLimit.Unit
        known = d.limit.unit in units.values()
        name = units.Name(d.limit.unit) if known else str(d.limit.unit)  # type: ignore[arg-type]
        fields["limit"] = f"requests_per_unit:{d.limit.requests_per_unit} unit:{name}"
    if d.HasField("hits_addend"):
        fields["hitsAddend"] = d.hits_addend.value
    return fields


def dynamic_metadata(request: rls_pb2.RateLimitRequest, result: CheckResult) -> dict[str, Any]:
    """Envoy's `dynamic_metadata`: the domain, the descriptors, the request's hits when
    given, and the passed descriptors' rules' `metadata` when there is any."""
    fields: dict[str, Any] = {
        "domain": request.domain,
        "descriptors": [_descriptor_fields(d) for d in request.descriptors],
    }
    if request.hits_addend:
        fields["hitsAddend"] = request.hits_addend
    metadata = result.metadata()
    if metadata:
        fields["metadata"] = metadata
    return fields


class EnvoyRateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(
        self,
        service: RateLimitService,
        *,
        response_headers: bool = False,
        dynamic_metadata: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.response_headers = response_headers
        self.dynamic_metadata = dynamic_metadata
        self.clock = clock

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> Response:
        # (Envoy's service refuses both as a service error)
        if not request.domain:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "domain must not be empty")
        if not request.descriptors:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "rate limit descriptor list must not be empty"
            )
        descriptors = [
            Descriptor(
                [(e.key, e.value) for e in d.entries],
                d.hits_addend.value if d.HasField("hits_addend") else None,
                _override(d),
            )
            for d in request.descriptors
        ]
        try:
            result = await self.service.check(
                domain=request.domain, descriptors=descriptors, cost=request.hits_addend or 1
            )
        except InvalidCost as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.detail)
        statuses = [descriptor_status(result, i) for i in range(len(descriptors))]
        response = Response(
            overall_code=Response.OK if result.allowed else Response.OVER_LIMIT,
            statuses=statuses,
        )
        if self.response_headers:
            response.response_headers_to_add.extend(self._headers(statuses))
        if self.dynamic_metadata:
            response.dynamic_metadata.update(dynamic_metadata(request, result))
        return response

    def _headers(self, statuses: list[Response.DescriptorStatus]) -> list[HeaderValue]:
        """Envoy's: the limit, what remains and the seconds to the unit's next boundary, of
        the descriptor with the least remaining (a refused one wins)."""
        limited = [s for s in statuses if s.HasField("current_limit")]
        if not limited:
            return []
        least = min(limited, key=lambda s: (s.code != Response.OVER_LIMIT, s.limit_remaining))
        unit = next((p for p, u in UNITS.items() if u == least.current_limit.unit), 1)
        reset = unit - int(self.clock()) % unit
        values = (least.current_limit.requests_per_unit, least.limit_remaining, reset)
        return [HeaderValue(key=k, value=str(v)) for k, v in zip(HEADERS, values, strict=True)]


async def start_grpc_server(
    servicer: EnvoyRateLimitServicer, *, host: str, port: int
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server, started; and the port it listens on (port 0: one the OS picked)."""
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:  # (grpcio's way of saying the port is taken)
        raise OSError(f"cannot listen for gRPC on {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port}")
    await server.start()
    log.info("grpc_listening", host=host, port=bound)
    return server, bound
