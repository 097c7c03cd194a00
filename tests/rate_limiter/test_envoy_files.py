"""Envoy's files mean what they mean in Envoy's ratelimit.

The cases restate, as this project's own, the facts in envoyproxy/ratelimit's README, its
example and test config files, its config tests' expectations and its integration scripts:
which files load or are refused, which limit a descriptor gets, how `replaces`, `quota_mode`,
shadow mode and wildcards decide, and the stats keys each request counts under
(`value_to_metric` and `share_threshold`: test_envoy_stats_keys.py; `metadata` and the
quota scripts: test_envoy_quota.py). Decisions run through the real service over the
in-memory backend on a fixed clock (so a minute window never turns over mid-test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rate_limiter import MemoryBackend, RulesError
from rate_limiter.algorithms import Algorithm
from rate_limiter.metrics import LimiterMetrics
from rate_limiter.rules import RuleSet
from rate_limiter.rules_files import load_rules
from rate_limiter.rules_yaml import parse_text
from rate_limiter.service import Descriptor, RateLimitService

# An instant 10 s into a minute (and into an hour), in µs.
T0 = (1_800_000_000 // 3600 * 3600 + 10) * 1_000_000

# Envoy's basic test file, restated.
BASIC = """\
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit: {unit: second, requests_per_unit: 5}
      - key: subkey1
        value: subvalue1
        rate_limit: {unit: second, requests_per_unit: 10}
  - key: key2
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: key2
    value: value2
    rate_limit: {unit: minute, requests_per_unit: 30}
  - key: key2
    value: value3
  - key: key3
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: key4
    rate_limit: {name: key4_rate_limit, unit: day, requests_per_unit: 1}
  - key: key5
    value: value5
    rate_limit: {unit: day, requests_per_unit: 15}
    descriptors:
      - key: subkey5
        value: subvalue5
        rate_limit: {unit: day, requests_per_unit: 25}
  - key: key6
    rate_limit: {unlimited: true}
  - key: key7
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 70}
"""


def limit_of(text: str, *entries: tuple[str, str]) -> tuple[int, str] | None:
    """The limit one descriptor gets (requests per unit, unit) and nothing else."""
    found = parse_text(text).lookup(list(entries))
    if not found:
        return None
    [m] = found
    return (m.rule.requests_per_unit or 0, m.rule.unit or "unlimited")


def stat_of(text: str, *entries: tuple[str, str]) -> str:
    [m] = parse_text(text).lookup(list(entries))
    return m.stat_key


def test_the_limit_is_the_one_the_last_entry_reaches() -> None:
    assert limit_of(BASIC, ("key1", "something")) is None
    assert limit_of(BASIC, ("key1", "value1")) is None  # a node without a limit
    assert limit_of(BASIC, ("key1", "value1"), ("subkey1", "x")) == (5, "second")
    assert limit_of(BASIC, ("key1", "value1"), ("subkey1", "subvalue1")) == (10, "second")
    assert limit_of(BASIC, ("key2", "something")) == (20, "minute")
    assert limit_of(BASIC, ("key2", "value2")) == (30, "minute")
    assert limit_of(BASIC, ("key2", "value3")) is None  # allowlisted
    # More entries than the tree has levels, or an entry that matches nothing: no limit,
    # although key2=value2 and key5=value5 have limits of their own.
    assert limit_of(BASIC, ("key2", "value2"), ("subkey", "subvalue")) is None
    assert limit_of(BASIC, ("key5", "value5"), ("subkey5", "subvalue")) is None
    assert limit_of(BASIC, ("key5", "value5"), ("subkey5", "subvalue5")) == (25, "day")
    assert limit_of(BASIC, ("key6", "foo")) == (0, "unlimited")
    [named] = parse_text(BASIC).lookup([("key4", "foo")])
    assert named.rule.name == "key4_rate_limit" and named.rule.replaceable
    [unnamed] = parse_text(BASIC).lookup([("key3", "foo")])
    assert not unnamed.rule.replaceable  # (Envoy's replaces only see names given)


def test_stats_keys_are_envoys() -> None:
    assert stat_of(BASIC, ("key1", "value1"), ("subkey1", "x")) == "test-domain.key1_value1.subkey1"
    assert (
        stat_of(BASIC, ("key1", "value1"), ("subkey1", "subvalue1"))
        == "test-domain.key1_value1.subkey1_subvalue1"
    )
    assert stat_of(BASIC, ("key2", "something")) == "test-domain.key2"
    # detailed_metric: the request's own values.
    assert stat_of(BASIC, ("key7", "unspecified_value")) == "test-domain.key7_unspecified_value"
    assert stat_of(BASIC, ("key7", "another_value")) == "test-domain.key7_another_value"


WILDCARDS = """\
domain: test-domain
descriptors:
  - key: wild
    value: foo*
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: noWild
    value: foo
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: midWild
    value: bar*b
    rate_limit: {unit: minute, requests_per_unit: 20}
  - key: multiWild
    value: foo*bar*baz
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: nestedWild
    value: val1
    descriptors:
      - key: wild
        value: goo*
        rate_limit: {unit: minute, requests_per_unit: 20}
"""


@pytest.mark.parametrize(
    ("entries", "limited"),
    [
        ([("wild", "foo1")], True),
        ([("wild", "foo")], True),
        ([("wild", "fo")], False),
        ([("noWild", "foo1")], False),
        ([("noWild", "foo")], True),
        ([("midWild", "barab")], True),
        ([("midWild", "barb")], True),
        ([("midWild", "bara")], False),
        ([("multiWild", "foo1bar2baz")], True),
        ([("multiWild", "foobarbaz")], True),
        ([("multiWild", "foobaz")], False),
        ([("multiWild", "foo1baz2bar")], False),
        ([("nestedWild", "val1"), ("wild", "goo1")], True),
        ([("nestedWild", "val1"), ("wild", "foo1")], False),
    ],
)
def test_wildcards_anywhere_in_a_value(entries: list[tuple[str, str]], limited: bool) -> None:
    assert (limit_of(WILDCARDS, *entries) is not None) is limited


def test_a_wildcard_keeps_its_pattern_in_the_stats_key() -> None:
    assert stat_of(WILDCARDS, ("wild", "foo1")) == "test-domain.wild_foo*"
    assert stat_of(WILDCARDS, ("midWild", "barxb")) == "test-domain.midWild_bar*b"


OVERLAP = """\
domain: d
descriptors:
  - key: path
    value: /api/*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: /api/v2/*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: path
    value: /api/v2/exact
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    rate_limit: {unit: minute, requests_per_unit: 4}
"""


def test_overlapping_wildcards_first_in_the_file_wins_after_an_exact_value() -> None:
    # (Envoy tries the exact value, then each wildcard in file order, then the bare key:
    # the longer /api/v2/* never wins over the earlier /api/*.)
    assert limit_of(OVERLAP, ("path", "/api/v2/x")) == (1, "minute")
    assert limit_of(OVERLAP, ("path", "/api/v2/exact")) == (3, "minute")
    assert limit_of(OVERLAP, ("path", "/other")) == (4, "minute")


def test_an_unlimited_ancestor_changes_nothing_below_it() -> None:
    text = """\
domain: d
descriptors:
  - key: tenant
    rate_limit: {unlimited: true}
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 1}
"""
    assert limit_of(text, ("tenant", "t")) == (0, "unlimited")
    assert limit_of(text, ("tenant", "t"), ("user", "u")) == (1, "minute")


def test_every_level_is_this_projects_reading_and_opt_in() -> None:
    text = """\
domain: d
apply_limits: every_level
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 10}
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 1}
"""
    names = [m.rule.name for m in parse_text(text).lookup([("tenant", "t"), ("user", "u")])]
    assert names == ["d.tenant", "d.tenant.user"]
    envoy = text.replace("apply_limits: every_level\n", "")
    names = [m.rule.name for m in parse_text(envoy).lookup([("tenant", "t"), ("user", "u")])]
    assert names == ["d.tenant.user"]


def test_counting_is_envoys_unless_an_algorithm_is_named() -> None:
    def limit(rate_limit: str, top: str = "") -> object:
        text = f"domain: d\n{top}descriptors:\n  - key: a\n    rate_limit: {rate_limit}\n"
        [m] = parse_text(text).lookup([("a", "x")])
        return m.rule.limit

    envoy = limit("{unit: minute, requests_per_unit: 5}")
    assert envoy.algorithm is Algorithm.FIXED_WINDOW and envoy.count_refused  # type: ignore[attr-defined]
    named = limit("{unit: minute, requests_per_unit: 5, algorithm: fixed_window}")
    assert not named.count_refused  # type: ignore[attr-defined]
    gcra = limit("{unit: minute, requests_per_unit: 5}", top="algorithm: gcra\n")
    assert gcra.algorithm is Algorithm.GCRA  # type: ignore[attr-defined]
    burst = limit("{unit: minute, requests_per_unit: 5, burst: 9}")
    assert burst.algorithm is Algorithm.GCRA  # type: ignore[attr-defined]
    # (Envoy reads a missing requests_per_unit as 0: every request refused.)
    text = "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: minute}\n"
    [m] = parse_text(text).lookup([("a", "x")])
    assert m.rule.block is not None


# --- files Envoy refuses, and files it loads ---------------------------------------------

REFUSED = {
    "empty domain": ("domain: ''\ndescriptors: []\n", "domain must not be empty"),
    "empty key": ("domain: d\ndescriptors:\n  - key: ''\n", "key must not be empty"),
    "duplicate key": (
        "domain: d\ndescriptors:\n  - key: k\n    value: v\n  - key: k\n    value: v\n",
        "duplicate descriptor composite key 'd.k_v'",
    ),
    "keys that collide once joined": (
        "domain: d\ndescriptors:\n  - key: a_b\n  - key: a\n    value: b\n",
        "duplicate descriptor composite key 'd.a_b'",
    ),
    "bad unit": (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n",
        "unknown unit",
    ),
    "replaces itself": (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      name: me\n      unit: second\n"
        "      requests_per_unit: 1\n      replaces: [{name: me}]\n",
        "cannot replace itself",
    ),
    "empty replaces": (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
        "      requests_per_unit: 1\n      replaces: [{name: ''}]\n",
        "empty name",
    ),
    "misspelled key": ("domain: d\ndescriptors:\n  - key: k\n    ratelimit: {}\n", "unknown key"),
    "misspelled nested key": (
        "domain: d\ndescriptors:\n  - key: k\n"
        "    rate_limit: {unit: second, request_per_unit: 1}\n",
        "unknown key 'request_per_unit'",
    ),
    "non-string key": ("0.25: d\ndescriptors: []\n", "must be a string, got '0.25'"),
    "integer key": ("domain: d\n5: x\n", "must be a string, got '5'"),
    "non-string value": (
        "domain: d\ndescriptors:\n  - key: k\n    value: 1.5\n",
        "value must be a string, got '1.5'",
    ),
    "timestamp value": (
        "domain: d\ndescriptors:\n  - key: k\n    value: 2024-01-01\n",
        "value must be a string",
    ),
    "a list of non-mappings": ("domain: d\ndescriptors:\n  - k\n", "must be a mapping"),
    "unlimited with a unit": (
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: day}\n",
        "an unlimited rule takes no unit",
    ),
    "bad yaml": ("domain: d\ndescriptors:\n  - key: [\n", "invalid YAML"),
}


@pytest.mark.parametrize(("text", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_files_envoy_refuses_are_refused(text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message.replace("(", r"\(")):
        parse_text(text, "r.yaml")


def test_integers_and_booleans_read_as_strings_where_envoy_reads_them_so() -> None:
    text = "domain: d\ndescriptors:\n  - key: 5\n    value: true\n    rate_limit:\n" \
           "      unit: second\n      requests_per_unit: 1\n"  # fmt: skip
    assert limit_of(text, ("5", "true")) == (1, "second")


# Envoy's main example file (the one its README and docker-compose example load), restated.
EXAMPLE = """\
domain: rl
descriptors:
  - key: category
    value: account
    rate_limit:
      replaces:
        - name: bkthomps
        - name: fake_name
      unit: minute
      requests_per_unit: 4
  - key: source_cluster
    value: proxy
    descriptors:
      - key: destination_cluster
        value: bkthomps
        rate_limit:
          replaces:
            - name: bkthomps
          unit: minute
          requests_per_unit: 2
      - key: destination_cluster
        value: mock
        rate_limit: {unit: minute, requests_per_unit: 1}
      - key: destination_cluster
        value: override
        rate_limit:
          replaces:
            - name: banned_limit
          unit: minute
          requests_per_unit: 2
      - key: destination_cluster
        value: fake
        rate_limit: {name: fake_name, unit: minute, requests_per_unit: 2}
  - key: foo
    rate_limit: {unit: minute, requests_per_unit: 2}
    descriptors:
      - key: bar
        rate_limit: {unit: minute, requests_per_unit: 3}
      - key: bar
        value: bkthomps
        rate_limit: {name: bkthomps, unit: minute, requests_per_unit: 1}
      - key: bar
        value: banned
        rate_limit: {name: banned_limit, unit: minute, requests_per_unit: 0}
      - key: baz
        rate_limit: {unit: second, requests_per_unit: 1}
      - key: baz
        value: not-so-shady
        rate_limit: {unit: minute, requests_per_unit: 3}
      - key: baz
        value: shady
        rate_limit: {unit: minute, requests_per_unit: 3}
        shadow_mode: true
      - key: bay
        rate_limit: {unlimited: true}
  - key: unspec
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: qux
    rate_limit: {unlimited: true}
  - key: service
    value: service_1
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
    metadata:
      service_with_quota:
        name: "service_1"
  - key: service
    value: service_2
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 2}
    metadata:
      service_with_quota:
        name: "service_2"
"""

Check = Callable[..., object]


@pytest.fixture
def service() -> tuple[RateLimitService, LimiterMetrics]:
    rules = RuleSet({"rl": parse_text(EXAMPLE, "example.yaml")})
    metrics = LimiterMetrics()
    svc = RateLimitService(
        rules=lambda: rules, backend=MemoryBackend(clock=lambda: T0), metrics=metrics
    )
    return svc, metrics


async def allowed(svc: RateLimitService, *descriptors: list[tuple[str, str]]) -> bool:
    result = await svc.check(domain="rl", descriptors=[Descriptor(d) for d in descriptors])
    return result.allowed


def two(foo: str, bar: str) -> list[tuple[str, str]]:
    return [("foo", foo), ("bar", bar)]


def clusters(destination: str) -> list[tuple[str, str]]:
    return [("source_cluster", "proxy"), ("destination_cluster", destination)]


async def test_envoys_example_loads_with_its_metadata(
    service: tuple[RateLimitService, LimiterMetrics],
) -> None:
    [m] = parse_text(EXAMPLE).lookup([("service", "service_1")])
    assert m.rule.quota_mode and m.rule.metadata == {"service_with_quota": {"name": "service_1"}}


async def test_replaces_works_across_a_requests_descriptors(
    service: tuple[RateLimitService, LimiterMetrics],
) -> None:
    """Envoy's replaces integration script, request by request (one minute window)."""
    svc, _ = service
    assert not await allowed(svc, two("bkthomps", "banned"))
    assert not await allowed(svc, two("bkthomps", "banned"), clusters("mock"))
    # `override` replaces the banned limit: its own 2 per minute decide.
    for expected in (True, True, False):
        assert await allowed(svc, two("bkthomps", "banned"), clusters("override")) is expected
    # The cluster rule replaces `bkthomps` (1 per minute): 2 per minute, never counted there.
    for expected in (True, True, False):
        assert await allowed(svc, two("my_foo", "bkthomps"), clusters("bkthomps")) is expected
    # Nothing below matches not_bkthomps: the bkthomps limit is back, untouched so far.
    assert await allowed(svc, two("my_foo", "bkthomps"), clusters("not_bkthomps"))
    assert not await allowed(svc, two("my_foo", "bkthomps"), clusters("not_bkthomps"))
    assert not await allowed(svc, two("my_foo", "bkthomps"), clusters("bkthomps"))
    # category=account replaces both bkthomps and fake_name.
    for _ in range(3):
        assert await allowed(
            svc, two("my_foo", "bkthomps"), clusters("fake"), [("category", "account")]
        )


async def test_shadow_mode_never_refuses_and_the_ordinary_rule_does(
    service: tuple[RateLimitService, LimiterMetrics],
) -> None:
    svc, metrics = service
    for _ in range(5):
        assert await allowed(svc, [("foo", "pelle"), ("baz", "shady")])
    assert [await allowed(svc, [("foo", "pelle"), ("baz", "not-so-shady")]) for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert metrics.envoy.value("rl.foo.baz_shady", "shadow_mode") == 2
    assert metrics.envoy.value("rl.foo.baz_not-so-shady", "over_limit") == 1


async def test_detailed_metric_counts_under_the_requests_value(
    service: tuple[RateLimitService, LimiterMetrics],
) -> None:
    svc, metrics = service
    assert [await allowed(svc, [("unspec", "unspecified_value")]) for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert metrics.envoy.value("rl.unspec_unspecified_value", "over_limit") == 1
    assert metrics.envoy.value("rl.unspec_unspecified_value", "total_hits") == 3


async def test_an_unknown_domain_is_ok(service: tuple[RateLimitService, LimiterMetrics]) -> None:
    svc, _ = service
    result = await svc.check(domain="nope", descriptors=[Descriptor([("a", "b")])])
    assert result.allowed and result.decisions == []


async def test_unlimited_descriptors_are_exempt_and_others_still_decide(
    service: tuple[RateLimitService, LimiterMetrics],
) -> None:
    svc, _ = service
    result = await svc.check(
        domain="rl",
        descriptors=[Descriptor([("qux", "q")]), Descriptor([("foo", "f"), ("bar", "banned")])],
    )
    assert not result.allowed and result.unlimited == frozenset({0})
    assert [d.descriptor for d in result.decisions] == [1]


async def test_fixed_windows_align_to_the_unit_and_count_refused_hits() -> None:
    clock = [T0 + 40 * 1_000_000]  # 50 s into the minute
    rules = RuleSet({"d": parse_text(rl_file("{unit: minute, requests_per_unit: 2}"))})
    svc = RateLimitService(rules=lambda: rules, backend=MemoryBackend(clock=lambda: clock[0]))
    first = await svc.check(domain="d", entries=[("a", "x")])
    assert first.decisions[0].decision.reset_after == pytest.approx(10)  # to the minute's end
    big = await svc.check(domain="d", entries=[("a", "x")], cost=2)
    assert not big.allowed
    # Envoy counts the refused hits: the one unit left is gone too.
    assert not (await svc.check(domain="d", entries=[("a", "x")])).allowed
    clock[0] += 10 * 1_000_000  # the next minute: a fresh window
    assert (await svc.check(domain="d", entries=[("a", "x")])).allowed


def rl_file(rate_limit: str) -> str:
    return f"domain: d\ndescriptors:\n  - key: a\n    rate_limit: {rate_limit}\n"


# --- one domain over several files ---------------------------------------------------------


def test_one_domain_over_several_files_merges_when_asked(tmp_path: Path) -> None:
    (tmp_path / "1.yaml").write_text(
        "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n"
        "    rate_limit: {unit: minute, requests_per_unit: 10}\n"
    )
    (tmp_path / "2.yaml").write_text(
        "domain: test-domain\ndescriptors:\n  - key: key2\n    value: value2\n"
        "    rate_limit: {unit: minute, requests_per_unit: 20}\n"
    )
    with pytest.raises(RulesError, match="already defined"):
        load_rules(tmp_path)
    domain = load_rules(tmp_path, merge_domains=True).domains["test-domain"]
    [one], [two_] = domain.lookup([("key1", "value1")]), domain.lookup([("key2", "value2")])
    assert (one.rule.requests_per_unit, two_.rule.requests_per_unit) == (10, 20)
    (tmp_path / "3.yaml").write_text(
        "domain: test-domain\ndescriptors:\n  - key: key1\n    value: value1\n"
    )
    with pytest.raises(RulesError, match="duplicate descriptor composite key"):
        load_rules(tmp_path, merge_domains=True)
