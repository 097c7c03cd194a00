"""Envoy's config tests for `value_to_metric` and `share_threshold`, restated: which limit a
descriptor gets, which stats key it counts under, and which values share one counter.

Each case names the Envoy test it restates (envoyproxy/ratelimit, test/config/
config_test.go). Envoy's `FullKey` (its debug-log key) and `ShareThresholdKeyPattern` (its
cache-key input) have one counterpart each here: the match's `stat_key`, and its storage
`key` (values that share a threshold share it)."""

from __future__ import annotations

import pytest

from rate_limiter import MemoryBackend
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules import Match, RuleSet
from rate_limiter.rules_yaml import parse_text
from rate_limiter.service import RateLimitService

# An instant 10 s into a minute, in µs.
T0 = (1_800_000_000 // 3600 * 3600 + 10) * 1_000_000

ROUTE_METHOD_SUBJECT = """\
domain: {domain}
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            {detailed}rate_limit: {{unit: minute, requests_per_unit: 60}}
"""


def one(text: str, *entries: tuple[str, str]) -> Match:
    [m] = parse_text(text).lookup(list(entries))
    return m


def none(text: str, *entries: tuple[str, str]) -> bool:
    return parse_text(text).lookup(list(entries)) == []


async def counted(text: str, *entries: tuple[str, str]) -> LimiterMetrics:
    """One check through the real service: what Envoy's stats would count."""
    domain = parse_text(text)
    rules = RuleSet({domain.name: domain})
    metrics = LimiterMetrics()
    svc = RateLimitService(
        rules=lambda: rules, backend=MemoryBackend(clock=lambda: T0), metrics=metrics
    )
    assert (await svc.check(domain=domain.name, entries=list(entries))).allowed
    return metrics


# --- value_to_metric -----------------------------------------------------------------------


async def test_value_to_metric_uses_the_requests_values() -> None:
    """TestValueToMetric_UsesRuntimeValuesInStats."""
    text = ROUTE_METHOD_SUBJECT.format(domain="domain", detailed="")
    entries = (("route", "draw"), ("http_method", "GET"), ("subject_id", "123"))
    key = "domain.route_draw.http_method_GET.subject_id"
    assert one(text, *entries).stat_key == key
    metrics = await counted(text, *entries)
    assert metrics.envoy.value(key, "total_hits") == 1
    assert metrics.envoy.value(key, "within_limit") == 1


@pytest.mark.parametrize(
    ("text", "entries", "key"),
    [
        (  # TestValueToMetric_DefaultKeyIncludesValueAtThatLevel
            "domain: d\ndescriptors:\n  - key: k1\n    value_to_metric: true\n"
            "    descriptors:\n      - key: k2\n"
            "        rate_limit: {unit: second, requests_per_unit: 1}\n",
            (("k1", "A"), ("k2", "foo")),
            "d.k1_A.k2",
        ),
        (  # TestValueToMetric_MidLevelOnly
            "domain: d\ndescriptors:\n  - key: k1\n    descriptors:\n      - key: k2\n"
            "        value_to_metric: true\n        descriptors:\n          - key: k3\n"
            "            rate_limit: {unit: second, requests_per_unit: 1}\n",
            (("k1", "X"), ("k2", "Y"), ("k3", "Z")),
            "d.k1.k2_Y.k3",
        ),
        (  # TestValueToMetric_NoFlag_Unchanged
            "domain: d\ndescriptors:\n  - key: k1\n    descriptors:\n      - key: k2\n"
            "        rate_limit: {unit: second, requests_per_unit: 1}\n",
            (("k1", "X"), ("k2", "Y")),
            "d.k1.k2",
        ),
    ],
    ids=["default-key-level", "mid-level-only", "no-flag"],
)
def test_value_to_metric_shows_a_value_only_where_it_is_set(
    text: str, entries: tuple[tuple[str, str], ...], key: str
) -> None:
    assert one(text, *entries).stat_key == key


async def test_detailed_metric_wins_over_value_to_metric() -> None:
    """TestValueToMetric_DoesNotOverrideDetailedMetric."""
    text = ROUTE_METHOD_SUBJECT.format(
        domain="domain", detailed="detailed_metric: true\n            "
    )
    entries = (("route", "draw"), ("http_method", "GET"), ("subject_id", "123"))
    key = "domain.route_draw.http_method_GET.subject_id_123"
    assert one(text, *entries).stat_key == key
    assert (await counted(text, *entries)).envoy.value(key, "total_hits") == 1


async def test_value_to_metric_beside_configured_values() -> None:
    """TestValueToMetric_WithConfiguredValues."""
    text = """\
domain: test-domain
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value: GET
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit: {unit: minute, requests_per_unit: 60}
      - key: http_method
        value: POST
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit: {unit: minute, requests_per_unit: 30}
"""
    get = one(text, ("route", "api"), ("http_method", "GET"), ("subject_id", "user123"))
    assert get.rule.requests_per_unit == 60
    assert get.stat_key == "test-domain.route_api.http_method_GET.subject_id"
    post = (("route", "api"), ("http_method", "POST"), ("subject_id", "user456"))
    assert one(text, *post).rule.requests_per_unit == 30
    key = "test-domain.route_api.http_method_POST.subject_id"
    assert one(text, *post).stat_key == key
    assert (await counted(text, *post)).envoy.value(key, "total_hits") == 1


async def test_value_to_metric_on_a_wildcard_shows_the_whole_value() -> None:
    """TestValueToMetric_WithWildcard."""
    text = """\
domain: domain
descriptors:
  - key: user
    value_to_metric: true
    descriptors:
      - key: action
        value: read*
        value_to_metric: true
        descriptors:
          - key: resource
            rate_limit: {unit: minute, requests_per_unit: 100}
"""
    alice = one(text, ("user", "alice"), ("action", "readfile"), ("resource", "documents"))
    assert alice.rule.requests_per_unit == 100
    assert alice.stat_key == "domain.user_alice.action_readfile.resource"
    bob = (("user", "bob"), ("action", "readdata"), ("resource", "database"))
    key = "domain.user_bob.action_readdata.resource"
    assert one(text, *bob).stat_key == key
    assert (await counted(text, *bob)).envoy.value(key, "total_hits") == 1


async def test_value_to_metric_leaves_an_empty_value_out() -> None:
    """TestValueToMetric_WithEmptyValue; and TestValueToMetric_FullKeyMatchesStatsKey's
    keys, with the flags and without (one key here: no FullKey beside the stats key)."""
    text = ROUTE_METHOD_SUBJECT.format(domain="domain", detailed="")
    s = ("subject_id", "123")
    assert one(text, ("route", ""), ("http_method", "GET"), s).stat_key == (
        "domain.route.http_method_GET.subject_id"
    )
    assert one(text, ("route", "draw"), ("http_method", ""), s).stat_key == (
        "domain.route_draw.http_method.subject_id"
    )
    both = (("route", ""), ("http_method", ""), s)
    key = "domain.route.http_method.subject_id"
    assert one(text, *both).stat_key == key
    metrics = await counted(text, *both)
    assert metrics.envoy.value(key, "total_hits") == metrics.envoy.value(key, "within_limit") == 1

    full = (("route", "api"), ("http_method", "GET"), ("subject_id", "user123"))
    flagged = ROUTE_METHOD_SUBJECT.format(domain="test-domain", detailed="")
    assert one(flagged, *full).stat_key == "test-domain.route_api.http_method_GET.subject_id"
    plain = flagged.replace("value_to_metric: true", "shadow_mode: false")
    assert one(plain, *full).stat_key == "test-domain.route.http_method.subject_id"
    detailed = plain.replace(
        "            rate_limit", "            detailed_metric: true\n            rate_limit"
    )
    assert one(detailed, *full).stat_key == (
        "test-domain.route_api.http_method_GET.subject_id_user123"
    )


# --- share_threshold: Envoy's test file, restated ------------------------------------------

SHARE_THRESHOLD = """\
domain: test-domain
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: nested
    value: parent
    descriptors:
      - key: files
        value: nested/*
        share_threshold: true
        rate_limit: {unit: minute, requests_per_unit: 200}
  - key: files
    value: top/*
    share_threshold: true
    descriptors:
      - key: files
        value: nested/*
        share_threshold: true
        rate_limit: {unit: minute, requests_per_unit: 300}
  - key: route
    value: api/*
    share_threshold: true
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: {unit: minute, requests_per_unit: 60}
  - key: service
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: {unit: minute, requests_per_unit: 80}
  - key: path
    value: path/*
    share_threshold: true
    descriptors:
      - key: file
        value: file/*
        share_threshold: false
        descriptors:
          - key: type
            rate_limit: {unit: minute, requests_per_unit: 120}
  - key: user
    value: user/*
    share_threshold: true
    descriptors:
      - key: resource
        value: res/*
        share_threshold: true
        descriptors:
          - key: action
            rate_limit: {unit: minute, requests_per_unit: 150}
  - key: file
    value: test1
    rate_limit: {unit: minute, requests_per_unit: 50}
  - key: file
    value: test*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: midpath
    value: /api*v1
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: multiroute
    value: svc*ep*rpc
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 50}
  - key: midroute
    value: /api*v2
    share_threshold: true
    value_to_metric: true
    rate_limit: {unit: minute, requests_per_unit: 80}
  - key: tenant
    value: t*prod
    share_threshold: true
    descriptors:
      - key: resource
        value: res*v2
        share_threshold: true
        rate_limit: {unit: minute, requests_per_unit: 60}
"""


def shared(key: str, values: list[str], limit: int, stat: str) -> None:
    """Every value gets `limit`, counts under `stat` and on one counter."""
    matches = [one(SHARE_THRESHOLD, (key, v)) for v in values]
    assert {m.rule.requests_per_unit for m in matches} == {limit}
    assert {m.stat_key for m in matches} == {stat}
    assert len({m.key for m in matches}) == 1


def test_share_threshold_basic() -> None:
    """TestShareThreshold, "Basic share_threshold"."""
    shared("files", ["files/a.pdf", "files/b.csv", "files/c.txt"], 100, "test-domain.files_files/*")


def test_share_threshold_beside_value_to_metric_and_detailed_metric() -> None:
    """TestShareThreshold, "share_threshold with metrics": the pattern wins over both."""
    api = one(SHARE_THRESHOLD, ("route", "api/v1"), ("method", "GET"))
    assert api.stat_key == "test-domain.route_api/*.method"
    assert api.key == one(SHARE_THRESHOLD, ("route", "api/v2"), ("method", "GET")).key
    svc = one(SHARE_THRESHOLD, ("service", "svc/user"), ("endpoint", "get"))
    assert svc.rule.detailed_metric
    assert svc.stat_key == "test-domain.service_svc/*.endpoint_get"
    assert svc.key == one(SHARE_THRESHOLD, ("service", "svc/other"), ("endpoint", "get")).key


def test_share_threshold_nested() -> None:
    """TestShareThreshold, "Nested wildcards"."""
    nested = one(SHARE_THRESHOLD, ("nested", "parent"), ("files", "nested/file1.txt"))
    assert nested.rule.requests_per_unit == 200
    assert nested.stat_key == "test-domain.nested_parent.files_nested/*"
    two = one(SHARE_THRESHOLD, ("files", "top/file1.txt"), ("files", "nested/file1.txt"))
    assert two.stat_key == "test-domain.files_top/*.files_nested/*"
    assert two.key == one(SHARE_THRESHOLD, ("files", "top/x"), ("files", "nested/y")).key
    # The parent shares, the child (a wildcard without share_threshold) does not.
    mixed = one(SHARE_THRESHOLD, ("path", "path/foo"), ("file", "file/doc1"), ("type", "pdf"))
    assert mixed.stat_key == "test-domain.path_path/*.file_file/*.type"
    other_path = one(SHARE_THRESHOLD, ("path", "path/bar"), ("file", "file/doc1"), ("type", "pdf"))
    other_file = one(SHARE_THRESHOLD, ("path", "path/foo"), ("file", "file/doc2"), ("type", "pdf"))
    assert mixed.key == other_path.key and mixed.key != other_file.key
    both = one(
        SHARE_THRESHOLD, ("user", "user/alice"), ("resource", "res/file1"), ("action", "read")
    )
    assert both.stat_key == "test-domain.user_user/*.resource_res/*.action"


async def test_share_threshold_an_exact_value_keeps_its_own_limit() -> None:
    """TestShareThreshold, "Explicit value precedence over wildcard", counters included."""
    test1 = one(SHARE_THRESHOLD, ("file", "test1"))
    assert test1.rule.requests_per_unit == 50 and test1.stat_key == "test-domain.file_test1"
    shared("file", ["test2", "test23", "test123"], 100, "test-domain.file_test*")
    assert test1.key != one(SHARE_THRESHOLD, ("file", "test2")).key
    domain = parse_text(SHARE_THRESHOLD)
    rules = RuleSet({domain.name: domain})
    metrics = LimiterMetrics()
    svc = RateLimitService(
        rules=lambda: rules, backend=MemoryBackend(clock=lambda: T0), metrics=metrics
    )
    for value in ("test2", "test23", "test123", "test1"):
        await svc.check(domain="test-domain", entries=[("file", value)])
    assert metrics.envoy.value("test-domain.file_test*", "total_hits") == 3
    assert metrics.envoy.value("test-domain.file_test1", "total_hits") == 1
    # One counter: the three took 3 of the shared 100.
    usage = await svc.usage(domain="test-domain", entries=[("file", "test9")])
    assert usage.decisions[0].decision.remaining == 97


def test_share_threshold_on_wildcards_inside_a_value() -> None:
    """TestShareThreshold, middle, multi, value_to_metric and nested middle wildcards."""
    shared("midpath", ["/api/v1", "/api-beta-v1", "/apiXYZv1"], 100, "test-domain.midpath_/api*v1")
    assert none(SHARE_THRESHOLD, ("midpath", "/api/v2"))
    shared(
        "multiroute",
        ["svcAepBrpc", "svcXXXepYYYrpc", "svceprpc"],
        50,
        "test-domain.multiroute_svc*ep*rpc",
    )
    assert none(SHARE_THRESHOLD, ("multiroute", "svcABCrpc"))
    shared("midroute", ["/api/v2", "/api-beta-v2"], 80, "test-domain.midroute_/api*v2")
    a = one(SHARE_THRESHOLD, ("tenant", "t1prod"), ("resource", "resAv2"))
    b = one(SHARE_THRESHOLD, ("tenant", "t99prod"), ("resource", "resBBBv2"))
    assert a.stat_key == b.stat_key == "test-domain.tenant_t*prod.resource_res*v2"
    assert a.key == b.key


# --- wildcards and the stats key: TestWildcardStatsBehavior ---------------------------------


@pytest.mark.parametrize(
    ("value", "flags", "entry", "key"),
    [
        ("foo*", "", "foo1", "test-domain.wild_foo*"),
        ("foo*", "value_to_metric: true", "foo1", "test-domain.wild_foo1"),
        ("foo*", "share_threshold: true", "foo1", "test-domain.wild_foo*"),
        (
            "foo*",
            "share_threshold: true\n    value_to_metric: true",
            "foo1",
            "test-domain.wild_foo*",
        ),
        ("foo*bar*", "", "foo123bar456", "test-domain.wild_foo*bar*"),
        ("foo*bar*", "", "fooXbarY", "test-domain.wild_foo*bar*"),
        ("foo*bar*", "value_to_metric: true", "foo123bar456", "test-domain.wild_foo123bar456"),
    ],
)
def test_a_wildcards_stats_key(value: str, flags: str, entry: str, key: str) -> None:
    text = (
        f"domain: test-domain\ndescriptors:\n  - key: wild\n    value: '{value}'\n"
        f"    {flags or 'shadow_mode: false'}\n"
        "    rate_limit: {unit: minute, requests_per_unit: 20}\n"
    )
    assert one(text, ("wild", entry)).stat_key == key


def test_value_to_metric_elsewhere_keeps_a_wildcards_pattern() -> None:
    """TestWildcardStatsBehavior, "value_to_metric in other descriptor"."""
    text = """\
domain: test-domain
descriptors:
  - key: wild
    value: foo*
    descriptors:
      - key: other
        value_to_metric: true
        descriptors:
          - key: limit
            rate_limit: {unit: minute, requests_per_unit: 20}
"""
    m = one(text, ("wild", "foo1"), ("other", "bar"), ("limit", "X"))
    assert m.stat_key == "test-domain.wild_foo*.other_bar.limit"
