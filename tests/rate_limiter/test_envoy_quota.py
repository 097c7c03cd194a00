"""Envoy's `metadata` and `quota_mode`, restated: its metadata config test and test file, its
service tests of the metadata it returns, and its quota, token-quota and multiservice
token-quota integration scripts (envoyproxy/ratelimit: test/config/config_test.go
TestMetadata, test/service/ratelimit_test.go, integration-test/scripts/*quota*.sh), run
request by request through the real service on a clock the test moves (so "wait a minute"
takes no time). The same flow over a real gRPC client: test_envoy_grpc.py."""

from __future__ import annotations

import pytest
from google.protobuf.json_format import MessageToDict

from rate_limiter import MemoryBackend, RulesError
from rate_limiter.envoy_api import ratelimit_pb2, rls_pb2
from rate_limiter.envoy_grpc import dynamic_metadata
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules import RuleSet
from rate_limiter.rules_yaml import parse_text
from rate_limiter.service import CheckResult, Descriptor, RateLimitService
from tests.rate_limiter.test_envoy_files import EXAMPLE, T0

MINUTE = 60 * 1_000_000


class Envoy:
    """The service over one file, as Envoy's filter calls it, on a clock the test moves."""

    def __init__(self, text: str) -> None:
        domain = parse_text(text)
        rules = RuleSet({domain.name: domain})
        self.domain = domain.name
        self.now = T0
        self.metrics = LimiterMetrics()
        self.svc = RateLimitService(
            rules=lambda: rules,
            backend=MemoryBackend(clock=lambda: self.now),
            metrics=self.metrics,
        )

    async def check(self, *descriptors: tuple[str, int | None]) -> CheckResult:
        """One call; each descriptor is ("service", value) with its own hits (None: 1)."""
        wanted = [Descriptor([("service", v)], hits) for v, hits in descriptors]
        return await self.svc.check(domain=self.domain, descriptors=wanted)


# --- the integration scripts, on Envoy's example file ---------------------------------------


async def test_quota_script() -> None:
    """quota.sh: /quota sends service_1 (1 a minute) and service_2 (2 a minute), both quota
    mode; each request counts on both. Refused only once both are over."""
    envoy = Envoy(EXAMPLE)
    both = (("service_1", None), ("service_2", None))
    assert [(await envoy.check(*both)).allowed for _ in range(3)] == [True, True, False]
    envoy.now += MINUTE  # "Waiting 1 minute for quota buckets to be refreshed"
    assert (await envoy.check(*both)).allowed


async def test_token_quota_script() -> None:
    """token-quota.sh: /tokenquota asks service_2 with hits 0 on the request path and counts
    1 on it when the stream is done: three requests pass, the fourth is refused."""
    envoy = Envoy(EXAMPLE)
    outcomes = []
    for _ in range(4):
        asked = await envoy.check(("service_2", 0))
        outcomes.append(asked.allowed)
        if asked.allowed:
            await envoy.check(("service_2", 1))  # (apply_on_stream_done)
    assert outcomes == [True, True, True, False]
    envoy.now += MINUTE
    assert (await envoy.check(("service_2", 0))).allowed


async def test_multiservice_token_quota_script() -> None:
    """multiservice-tokenquota.sh: both services asked at hits 0, the request routed to the
    service the response's metadata names, 1 counted on that one when the stream is done:
    service_1 serves two, service_2 three, the sixth is refused; a minute later, service_1."""
    envoy = Envoy(EXAMPLE)

    async def request() -> str | None:
        asked = await envoy.check(("service_1", 0), ("service_2", 0))
        metadata = asked.metadata()
        if not asked.allowed:
            assert metadata is None
            return None
        assert metadata is not None
        name: str = metadata["service_with_quota"]["name"]
        await envoy.check((name, 1))
        return name

    served = [await request() for _ in range(6)]
    assert served == ["service_1", "service_1", "service_2", "service_2", "service_2", None]
    envoy.now += MINUTE
    assert await request() == "service_1"


# --- the metadata config test and its file --------------------------------------------------

METADATA = """\
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          unit: second
          requests_per_unit: 5
        metadata:
          name: service_1
      - key: subkey1
        value: subvalue1
        rate_limit:
          unit: second
          requests_per_unit: 10
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
    metadata:
      service_with_quota:
        name: service_2
"""


async def test_metadata_config() -> None:
    """TestMetadata: the file loads, each rule keeps its own metadata, stats as usual."""
    domain = parse_text(METADATA)
    assert domain.lookup([]) == []
    [sub] = domain.lookup([("key1", "value1"), ("subkey1", "something")])
    assert (sub.rule.requests_per_unit, sub.rule.unit) == (5, "second")
    assert sub.rule.metadata == {"name": "service_1"}
    [key2] = domain.lookup([("key2", "something")])
    assert (key2.rule.requests_per_unit, key2.rule.unit) == (20, "minute")
    assert key2.rule.metadata == {"service_with_quota": {"name": "service_2"}}
    [exact] = domain.lookup([("key1", "value1"), ("subkey1", "subvalue1")])
    assert exact.rule.metadata is None
    envoy = Envoy(METADATA)
    for entries, key in (
        ([("key1", "value1"), ("subkey1", "something")], "test-domain.key1_value1.subkey1"),
        ([("key2", "something")], "test-domain.key2"),
    ):
        result = await envoy.svc.check(domain="test-domain", entries=entries)
        assert (
            result.allowed and result.metadata() == (sub if "key1" in key else key2).rule.metadata
        )
        assert envoy.metrics.envoy.value(key, "total_hits") == 1
        assert envoy.metrics.envoy.value(key, "within_limit") == 1


# --- the metadata the service returns: Envoy's service tests ---------------------------------

REGULAR_AND_QUOTA = """\
domain: quota-domain
descriptors:
  - key: service
    value: regular
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 10}
    metadata: {name: service_1}
  - key: service
    value: quota
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 5}
    metadata: {%s: service_2}
"""


async def test_metadata_comes_from_the_passed_descriptors_only() -> None:
    """TestMetadataReturnedForPassedDescriptors (Envoy's global QUOTA_MODE there: every
    rule in quota mode, as here by file)."""
    envoy = Envoy(REGULAR_AND_QUOTA % "name")
    await envoy.check(("quota", 5))
    result = await envoy.check(("regular", None), ("quota", None))
    assert result.allowed and result.metadata() == {"name": "service_1"}


async def test_metadata_of_every_passed_descriptor_merges() -> None:
    """TestMetadataReturnedForAllPassedDescriptors and
    TestOverlappingMetadataReturnsTheFirstValue."""
    merged = await Envoy(REGULAR_AND_QUOTA % "some_other_name").check(
        ("regular", None), ("quota", None)
    )
    assert merged.metadata() == {"name": "service_1", "some_other_name": "service_2"}
    first = await Envoy(REGULAR_AND_QUOTA % "name").check(("regular", None), ("quota", None))
    assert first.metadata() == {"name": "service_1"}


def request(domain: str, *entries: tuple[str, str], hits: int = 0) -> rls_pb2.RateLimitRequest:
    d = ratelimit_pb2.RateLimitDescriptor
    return rls_pb2.RateLimitRequest(
        domain=domain,
        descriptors=[d(entries=[d.Entry(key=k, value=v) for k, v in entries])],
        hits_addend=hits,
    )


async def test_dynamic_metadatas_shape() -> None:
    """TestRatelimitToMetadata: the domain, each descriptor's entries as key=value, the
    request's hits when given, the passed rules' metadata when there is any."""
    no_rule = rls_pb2.RateLimitResponse(dynamic_metadata=dynamic_metadata(
        request("fake-domain", ("key1", "val1")), CheckResult(True, [])
    ))  # fmt: skip
    assert MessageToDict(no_rule.dynamic_metadata) == {
        "descriptors": [{"entries": ["key1=val1"]}],
        "domain": "fake-domain",
    }
    envoy = Envoy(REGULAR_AND_QUOTA % "name")
    passed = await envoy.check(("regular", 5))
    fields = dynamic_metadata(request("quota-domain", ("service", "regular"), hits=5), passed)
    assert fields == {
        "descriptors": [{"entries": ["service=regular"]}],
        "domain": "quota-domain",
        "hitsAddend": 5,
        "metadata": {"name": "service_1"},
    }


def test_metadata_is_read_as_envoy_reads_it() -> None:
    """Any mapping, kept as written for protobuf's Struct: timestamps stay text, keys become
    text; null or empty is none; anything but a mapping is refused."""

    def metadata(value: str) -> object:
        text = (
            f"domain: d\ndescriptors:\n  - key: k\n    metadata: {value}\n"
            "    rate_limit: {unit: second, requests_per_unit: 1}\n"
        )
        [m] = parse_text(text).lookup([("k", "v")])
        return m.rule.metadata

    assert metadata("{when: 2024-01-01, 5: x, true: y, n: ~, l: [1, 2.5]}") == {
        "when": "2024-01-01",
        "5": "x",
        "true": "y",
        "n": None,
        "l": [1, 2.5],
    }
    assert metadata("~") is None and metadata("{}") is None
    with pytest.raises(RulesError, match="metadata must be a mapping"):
        metadata("[a, b]")
