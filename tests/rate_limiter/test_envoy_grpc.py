"""Envoy's gRPC API (`RateLimitService/ShouldRateLimit`) against a real `python -m
rate_limiter` process, called by a real gRPC client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from common.redis_server import free_port
from rate_limiter.envoy_api import ratelimit_pb2, rls_pb2, rls_pb2_grpc
from tests.rate_limiter.factories import write_rules
from tests.support import ServiceProcess

pytestmark = pytest.mark.slow

# (Envoy counts in windows aligned to the unit: day-long ones, so that no window boundary
# falls inside a test but at midnight UTC.)

Response = rls_pb2.RateLimitResponse
Desc = ratelimit_pb2.RateLimitDescriptor

RULES = """\
domain: rl
descriptors:
  - key: foo
    rate_limit: {unit: day, requests_per_unit: 2}
    descriptors:
      - key: bar
        value: bkthomps
        rate_limit: {name: bkthomps, unit: day, requests_per_unit: 1}
      - key: baz
        value: shady
        shadow_mode: true
        rate_limit: {unit: day, requests_per_unit: 1}
  - key: category
    value: account
    rate_limit:
      unit: day
      requests_per_unit: 100
      replaces: [{name: bkthomps}]
  - key: qux
    rate_limit: {unlimited: true}
"""


def descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return Desc(entries=[Desc.Entry(key=k, value=v) for k, v in entries])


Served = tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess]


@contextlib.contextmanager
def serving(
    rules: Path, redis_url: str, service_factory: Callable[..., ServiceProcess], setting: str
) -> Iterator[Served]:
    """`python -m rate_limiter` on `rules` with `setting` on, and a gRPC client of it."""
    port = free_port()
    svc = service_factory(
        "rate_limiter",
        {
            "RATE_LIMITER_RULES": str(rules),
            "RATE_LIMITER_REDIS_URL": redis_url,
            "RATE_LIMITER_GRPC_PORT": str(port),
            f"RATE_LIMITER_{setting}": "true",
        },
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield rls_pb2_grpc.RateLimitServiceStub(channel), svc


@pytest.fixture
def limiter(
    tmp_path: Path, redis_url: str, service_factory: Callable[..., ServiceProcess]
) -> Iterator[Served]:
    with serving(
        write_rules(tmp_path, RULES), redis_url, service_factory, "LIMIT_RESPONSE_HEADERS"
    ) as served:
        yield served


def call(
    stub: rls_pb2_grpc.RateLimitServiceStub, *descriptors: Desc, hits: int = 0, domain: str = "rl"
) -> Response:
    request = rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits)
    response: Response = stub.ShouldRateLimit(request, timeout=5)
    return response


def test_should_rate_limit_speaks_envoys_api(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, svc = limiter
    first = call(stub, descriptor(("foo", "f1")))
    assert first.overall_code == Response.OK
    [status] = first.statuses
    assert status.code == Response.OK and status.limit_remaining == 1
    assert status.current_limit.requests_per_unit == 2
    assert status.current_limit.unit == Response.RateLimit.DAY
    assert 0 < status.duration_until_reset.seconds <= 86400
    headers = {h.key: h.value for h in first.response_headers_to_add}
    assert headers["RateLimit-Limit"] == "2" and headers["RateLimit-Remaining"] == "1"
    assert 0 < int(headers["RateLimit-Reset"]) <= 86400

    # hits_addend: two hits at once use up the rest and then some.
    over = call(stub, descriptor(("foo", "f1")), hits=2)
    assert over.overall_code == Response.OVER_LIMIT
    assert over.statuses[0].code == Response.OVER_LIMIT and over.statuses[0].limit_remaining == 0

    # Several descriptors: one status each, in order; an unlimited one, one no rule matches.
    many = call(
        stub,
        descriptor(("qux", "q")),
        descriptor(("nothing", "here")),
        descriptor(("foo", "f2")),
    )
    assert many.overall_code == Response.OK
    unlimited, unmatched, limited = many.statuses
    assert unlimited.code == Response.OK and unlimited.limit_remaining == 2**32 - 1
    assert unmatched.code == Response.OK and not unmatched.HasField("current_limit")
    assert limited.current_limit.requests_per_unit == 2

    # replaces across descriptors: the account rule drops the bkthomps limit (1 a day).
    bk = descriptor(("foo", "f3"), ("bar", "bkthomps"))
    account = descriptor(("category", "account"))
    for _ in range(3):
        both = call(stub, bk, account)
        assert both.overall_code == Response.OK
        assert not both.statuses[0].HasField("current_limit")
    assert [call(stub, bk).overall_code for _ in range(2)] == [Response.OK, Response.OVER_LIMIT]

    # Shadow mode: over the limit, still OK.
    shady = descriptor(("foo", "f4"), ("baz", "shady"))
    assert [call(stub, shady).overall_code for _ in range(2)] == [Response.OK, Response.OK]

    # An unknown domain: OK.
    assert call(stub, descriptor(("foo", "f1")), domain="nope").overall_code == Response.OK

    # The same metrics as the HTTP API, Envoy's names among them.
    metrics = httpx.get(f"{svc.url}/metrics").text
    assert 'ratelimit_service_rate_limit_shadow_mode{domain="rl",key1="foo",key2="baz_shady"}' in (
        metrics
    )
    assert 'rate_limiter_decisions_total{domain="rl",outcome="refused",rule="rl.foo"} 1.0' in (
        metrics
    )


def test_the_http_api_and_grpc_share_their_counters(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, svc = limiter
    body = {"domain": "rl", "descriptors": [{"key": "foo", "value": "shared"}]}
    assert httpx.post(f"{svc.url}/api/check", json=body).json()["allowed"]
    assert call(stub, descriptor(("foo", "shared"))).statuses[0].limit_remaining == 0


def test_bad_requests_are_invalid_arguments(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, _ = limiter
    for request in (
        rls_pb2.RateLimitRequest(domain="", descriptors=[descriptor(("foo", "f"))]),
        rls_pb2.RateLimitRequest(domain="rl"),
        rls_pb2.RateLimitRequest(domain="rl", descriptors=[descriptor(("foo", "f"))],
                                 hits_addend=2_000_000),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            stub.ShouldRateLimit(request, timeout=5)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_a_descriptors_own_hits_addend_overrides_the_requests(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, _ = limiter

    def with_hits(n: int) -> ratelimit_pb2.RateLimitDescriptor:
        d = descriptor(("foo", "quota"))
        d.hits_addend.value = n
        return d

    # 0: checked, not counted (Envoy's way of asking before a stream's cost is known).
    for _ in range(3):
        assert call(stub, with_hits(0), hits=5).statuses[0].limit_remaining == 2
    assert call(stub, with_hits(2), hits=1).statuses[0].limit_remaining == 0
    assert call(stub, with_hits(0)).overall_code == Response.OK  # at the limit, not over it
    assert call(stub, with_hits(1)).overall_code == Response.OVER_LIMIT


def test_a_descriptors_limit_override_replaces_the_rules_limit(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, _ = limiter
    d = descriptor(("foo", "overridden"))
    d.limit.requests_per_unit = 1
    d.limit.unit = Response.RateLimit.HOUR
    first = call(stub, d)
    assert first.statuses[0].current_limit.requests_per_unit == 1
    assert first.statuses[0].current_limit.unit == Response.RateLimit.HOUR
    assert call(stub, d).overall_code == Response.OVER_LIMIT
    # The same entries without the override: the rule's own 2 a day, a counter of its own.
    assert call(stub, descriptor(("foo", "overridden"))).statuses[0].limit_remaining == 1


# Envoy's example file's quota-mode descriptors (day-long windows here), with their metadata.
QUOTA_RULES = """\
domain: rl
descriptors:
  - key: service
    value: service_1
    quota_mode: true
    rate_limit: {unit: day, requests_per_unit: 1}
    metadata:
      service_with_quota:
        name: "service_1"
  - key: service
    value: service_2
    quota_mode: true
    rate_limit: {unit: day, requests_per_unit: 2}
    metadata:
      service_with_quota:
        name: "service_2"
      tier: 2
"""


def service(name: str, hits: int) -> Desc:
    d = descriptor(("service", name))
    d.hits_addend.value = hits
    return d


def http_metadata(svc: ServiceProcess) -> object:
    """`/api/check`'s metadata for both services, asked at hits 0."""
    body = {
        "domain": "rl",
        "descriptors": [
            {"entries": [{"key": "service", "value": s}], "hits_addend": 0}
            for s in ("service_1", "service_2")
        ],
    }
    return httpx.post(f"{svc.url}/api/check", json=body).json()["metadata"]


def test_dynamic_metadata_names_the_service_that_still_has_quota(
    tmp_path: Path, redis_url: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    """Envoy's multiservice token-quota script over gRPC: Envoy asks with both services at
    hits 0 and routes to the one the metadata names, then counts 1 on the service that
    answered; the first service passes twice, the second three times, then no service."""
    rules = write_rules(tmp_path, QUOTA_RULES)
    with serving(rules, redis_url, service_factory, "RESPONSE_DYNAMIC_METADATA") as (stub, svc):
        # Over HTTP too: the first passed descriptor's keys win, mappings merge (tier is
        # service_2's).
        assert http_metadata(svc) == {"service_with_quota": {"name": "service_1"}, "tier": 2}
        picked: list[str | None] = []
        for _ in range(6):
            ask = call(stub, service("service_1", 0), service("service_2", 0))
            fields = MessageToDict(ask.dynamic_metadata)
            assert fields["domain"] == "rl"
            assert fields["descriptors"] == [
                {"entries": ["service=service_1"], "hitsAddend": 0},
                {"entries": ["service=service_2"], "hitsAddend": 0},
            ]
            if ask.overall_code == Response.OVER_LIMIT:
                assert "metadata" not in fields  # (no service passed)
                picked.append(None)
                continue
            name = fields["metadata"]["service_with_quota"]["name"]
            picked.append(name)
            call(stub, service(name, 1))  # (Envoy's apply_on_stream_done hit)
        assert http_metadata(svc) is None
    assert picked == ["service_1", "service_1", "service_2", "service_2", "service_2", None]


def test_dynamic_metadata_is_off_unless_asked_for(
    limiter: tuple[rls_pb2_grpc.RateLimitServiceStub, ServiceProcess],
) -> None:
    stub, _ = limiter
    assert not call(stub, descriptor(("foo", "f"))).HasField("dynamic_metadata")
