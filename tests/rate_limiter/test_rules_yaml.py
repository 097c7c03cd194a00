"""Envoy-format rules: parsing, matching, errors that name the line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rate_limiter import Algorithm, RulesError
from rate_limiter.rules_files import load_rules
from rate_limiter.rules_yaml import parse_text
from rate_limiter.settings import EXAMPLE_RULES

ENVOY_FILE = """\
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500

  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
"""


def test_envoy_files_load_unchanged() -> None:
    domain = parse_text(ENVOY_FILE, "envoy.yaml")
    assert domain.name == "mongo_cps"
    [match] = domain.match([("database", "users")])
    assert match.rule.limit is not None
    assert match.rule.limit.rate == 500 and match.rule.limit.period == 1
    # No `algorithm`: counted as Envoy counts, a fixed window that counts refused hits too.
    assert match.rule.limit.algorithm is Algorithm.FIXED_WINDOW
    assert match.rule.limit.count_refused
    assert match.rule.name == "mongo_cps.database_users"
    assert domain.match([("database", "other")]) == []


def test_example_file_is_valid_and_matches_along_the_path() -> None:
    domain = load_rules(EXAMPLE_RULES).domains["api"]
    names = [m.rule.name for m in domain.match([("api_key", "k1"), ("route", "POST /api/x")])]
    assert names == ["api.api_key", "api.api_key.route_POST /api/*"]
    # An exact value beats the bare key; unlimited exempts the whole path.
    assert domain.match([("api_key", "internal-monitoring"), ("route", "POST /api/x")]) == []
    # No value: each value is its own counter.
    a, b = domain.match([("remote_address", "1.1.1.1")]), domain.match([("remote_address", "2")])
    assert a[0].key != b[0].key and a[0].rule is b[0].rule
    shadow = domain.match([("api_key", "k"), ("route", "GET /api/export")])[1]
    assert shadow.rule.shadow_mode
    # Envoy's blocklist and allowlist entries, and `replaces`.
    [blocked] = domain.match([("remote_address", "203.0.113.66")])
    assert blocked.rule.block is not None
    assert domain.match([("remote_address", "10.0.0.2")]) == []
    bulk = domain.match([("api_key", "k1"), ("route", "GET /api/bulk")])
    assert [m.rule.name for m in bulk] == ["api.api_key.route_GET /api/bulk"]
    # Prefetching is per rule: the tenant rule opts in, the rest leave it to the service.
    [tenant] = domain.match([("tenant", "t1")])
    assert tenant.rule.limit and tenant.rule.limit.prefetch is True
    assert tenant.rule.as_dict()["prefetch"] is True
    assert a[0].rule.limit and a[0].rule.limit.prefetch is None


# The rest of Envoy's format: a blocklist entry (0 requests), an allowlist entry (no limit,
# no children), `replaces`, and wildcard values that share one counter.
ENVOY_EXTRAS = """\
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 198.51.100.7
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: remote_address
    value: 10.0.0.1
  - key: user
    rate_limit: {unit: second, requests_per_unit: 5, name: per_user}
    descriptors:
      - key: route
        value: /bulk
        rate_limit:
          unit: second
          requests_per_unit: 50
          replaces:
            - name: per_user
  - key: tenant
    value: acme-*
    share_threshold: true
    value_to_metric: true
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: team
    value: red-*
    rate_limit: {unit: minute, requests_per_unit: 100}
"""


def test_envoy_blocklists_allowlists_replaces_and_shared_thresholds() -> None:
    domain = parse_text(ENVOY_EXTRAS, "edge.yaml")
    [blocked] = domain.match([("remote_address", "198.51.100.7")])
    block = blocked.rule.block
    assert block is not None and blocked.rule.limit is None and not blocked.rule.unlimited
    decision = block.decision()
    assert not decision.allowed and decision.limit == 0 and decision.retry_after == float("inf")
    assert blocked.rule.as_dict()["blocks"] is True
    # An entry with neither rate_limit nor descriptors: nothing applies to that address.
    assert domain.match([("remote_address", "10.0.0.1")]) == []
    [anyone] = domain.match([("remote_address", "10.0.0.2")])
    assert anyone.rule.limit and anyone.rule.limit.rate == 10
    # `replaces`: on /bulk the route's rule stands in for the user's; elsewhere it applies.
    bulk = domain.match([("user", "u"), ("route", "/bulk")])
    assert [m.rule.name for m in bulk] == ["edge.user.route_/bulk"]
    assert bulk[0].rule.as_dict()["replaces"] == ["per_user"]
    assert [m.rule.name for m in domain.match([("user", "u")])] == ["per_user"]
    # (Envoy's walk: /x matches nothing below the user, so nothing applies at all.)
    assert domain.match([("user", "u"), ("route", "/x")]) == []
    # share_threshold: every value the wildcard matches counts on one counter...
    eu, us = domain.match([("tenant", "acme-eu")]), domain.match([("tenant", "acme-us")])
    assert eu[0].key == us[0].key
    # ... without it, each value its own (as before).
    red1, red2 = domain.match([("team", "red-1")]), domain.match([("team", "red-2")])
    assert red1[0].rule is red2[0].rule and red1[0].key != red2[0].key


def test_a_replaces_naming_no_rule_loads_with_a_warning() -> None:
    text = rl("{unit: second, requests_per_unit: 1, replaces: [{name: per_usr}]}")
    with capture_logs() as logs:
        parse_text(text, "r.yaml")
    [warning] = [e for e in logs if e["event"] == "rules_replaces_unknown_rule"]
    assert warning["replaces"] == ["per_usr"] and warning["source"] == "r.yaml:4"


def test_envoy_files_read_as_envoy_reads_them() -> None:
    text = """\
domain: d
descriptors:
  - key: team
    value: ~                   # no value: the key alone, every value its own counter
    rate_limit: &hourly {unit: hour, requests_per_unit: 7}
  - key: user
    value: ""                  # the same
    rate_limit: {<<: *hourly, requests_per_unit: 9}
  - key: internal
    rate_limit: {unlimited: true, requests_per_unit: 10}
  - key: region
    shadow_mode: true          # without a rate_limit: ignored (with a warning)
"""
    with capture_logs() as logs:
        domain = parse_text(text, "d.yaml")
    [user] = domain.match([("user", "alice")])
    assert user.rule.limit and user.rule.limit.rate == 9 and user.rule.unit == "hour"
    [team] = domain.match([("team", "red")])
    assert team.rule.limit and team.rule.limit.rate == 7
    assert domain.match([("internal", "x")]) == []
    assert domain.match([("region", "eu")]) == []
    assert [e["event"] for e in logs] == ["rules_shadow_mode_without_rate_limit"]


def test_merge_keys_leave_anchors_as_they_are_and_the_earlier_merge_wins() -> None:
    text = """\
domain: d
descriptors:
  - key: x
    rate_limit: &second {unit: second, requests_per_unit: 5}
  - key: y
    rate_limit: &minute {unit: minute, requests_per_unit: 7}
  - key: a
    descriptors:
      - key: b
        rate_limit: &ten
          <<: *second
          requests_per_unit: 10
    rate_limit:
      <<: *ten                 # read before a's descriptors, where &ten has a merge itself
      unit: minute
  - key: z
    rate_limit:
      <<: [*second, *minute]   # the earlier mapping's keys win (the YAML spec, and Envoy's)
"""
    rules = {r.name: (r.requests_per_unit, r.unit) for r in parse_text(text).rules()}
    assert rules == {
        "d.x": (5, "second"), "d.y": (7, "minute"), "d.a": (10, "minute"),
        "d.a.b": (10, "second"), "d.z": (5, "second"),
    }  # fmt: skip


def test_merge_chains_load_and_bad_merges_are_rules_errors() -> None:
    chain = "domain: d\ndescriptors:\n  - key: k\n"
    chain += "    rate_limit: &m0 {unit: hour, requests_per_unit: 1}\n"
    for i in range(1, 40):
        chain += f"  - key: k{i}\n    rate_limit: &m{i} {{<<: *m{i - 1}}}\n"
    # (each mapping is resolved once, in file order: a long chain is no deeper than one)
    assert {r.unit for r in parse_text(chain).rules()} == {"hour"}
    # A mapping merging the previous one twice, 30 levels deep: read in linear time.
    doubled = "domain: d\ndescriptors:\n  - key: k0\n"
    doubled += "    rate_limit: &m0 {unit: hour, requests_per_unit: 1}\n"
    for i in range(1, 31):
        doubled += f"  - key: k{i}\n    rate_limit: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}\n"
    started = time.monotonic()
    assert len(list(parse_text(doubled).rules())) == 31
    assert time.monotonic() - started < 2
    # A mapping that merges itself.
    with pytest.raises(RulesError, match="merge keys \\(<<\\) nest more than 32 levels"):
        parse_text(rl("&self {<<: *self, unit: hour, requests_per_unit: 1}"))
    with pytest.raises(RulesError, match="a merge key \\(<<\\) takes a mapping"):
        parse_text(rl("{<<: 5, unit: hour, requests_per_unit: 1}"))
    with pytest.raises(RulesError, match="requests_per_unit must be an integer, got 'lots'"):
        parse_text(rl("{unlimited: true, requests_per_unit: lots}"))
    with pytest.raises(RulesError, match="requests_per_unit must be an integer"):
        parse_text(rl("{unlimited: true, requests_per_unit: [1, 2]}"))


def test_a_rule_can_replace_an_unlimited_one() -> None:
    domain = parse_text("""\
domain: d
descriptors:
  - key: tenant
    value: internal
    rate_limit: {unlimited: true, name: internal_unlimited}
    descriptors:
      - key: route
        value: expensive
        rate_limit:
          unit: second
          requests_per_unit: 1
          replaces: [{name: internal_unlimited}]
""")
    assert domain.match([("tenant", "internal"), ("route", "cheap")]) == []
    [m] = domain.match([("tenant", "internal"), ("route", "expensive")])
    assert m.rule.limit and m.rule.limit.rate == 1


def test_a_shared_counter_cannot_be_named_by_a_request_value() -> None:
    domain = parse_text("""\
domain: d
descriptors:
  - key: user
    value: team*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: user
    value: team**
    rate_limit: {unit: minute, requests_per_unit: 5}
""")
    [shared] = domain.match([("user", "team-a")])
    # A literal `team*` is the wildcard's own index (Envoy looks `key_value` up first), but it
    # counts on a counter of its own, not the one every matched value shares.
    [literal] = domain.match([("user", "team*")])
    assert literal.rule is shared.rule and literal.key != shared.key


def test_prefetch_may_also_be_refused_per_rule() -> None:
    domain = parse_text(rl("{unit: second, requests_per_unit: 5, prefetch: false}"))
    [m] = domain.match([("a", "x")])
    assert m.rule.limit and m.rule.limit.prefetch is False
    # (`false` is allowed on any algorithm: it asks for what every other algorithm does)
    domain = parse_text(rl("{unit: second, requests_per_unit: 5, algorithm: fixed_window,"
                           " prefetch: false}"))  # fmt: skip
    [m] = domain.match([("a", "x")])
    assert m.rule.limit and m.rule.limit.prefetch is False


def test_nested_rules_and_extensions() -> None:
    domain = parse_text(
        """
domain: d
descriptors:
  - key: user
    descriptors:
      - key: action
        value: upload
        rate_limit: {unit: minute, requests_per_unit: 3, algorithm: sliding_log}
      - key: action
        rate_limit:
          {unit: hour, requests_per_unit: 9, algorithm: token_bucket, burst: 4, name: actions}
"""
    )
    [m] = domain.match([("user", "u1"), ("action", "upload")])
    assert m.rule.limit and m.rule.limit.algorithm is Algorithm.SLIDING_LOG
    [m] = domain.match([("user", "u1"), ("action", "view")])
    assert m.rule.name == "actions" and m.rule.limit and m.rule.limit.capacity == 4
    assert domain.match([("user", "u1")]) == []  # the user node itself has no limit


HEAD = "domain: d\ndescriptors:\n  - key: a\n"


def rl(body: str) -> str:
    """A file whose one descriptor (line 3) has `rate_limit: <body>` on line 4."""
    return f"{HEAD}    rate_limit: {body}\n"


BAD = [
    (rl("{unit: fortnight, requests_per_unit: 1}"), 4, "unknown unit 'fortnight'"),
    (f"{HEAD}    rate_limit:\n      unit: second\n      requests_per_unit: ten\n", 6,
     "requests_per_unit must be an integer"),
    (f"{HEAD}    rate_limt: {{unit: second}}\n", 4, "unknown key 'rate_limt'"),
    ("domain: d\ndescriptors:\n  - value: x\n    rate_limit: {}\n", 3, "needs a 'key'"),
    (rl("{requests_per_unit: 5}"), 4, "needs 'unit'"),
    (rl("{unit: second, requests_per_unit: 1, algorithm: magic}"), 4,
     "unknown algorithm 'magic'"),
    (rl("{unit: second, requests_per_unit: -1}"), 4, "between 0 and 4294967295"),
    (rl("{unit: second, requests_per_unit: 4294967296}"), 4, "between 0 and 4294967295"),
    (f"{HEAD}    rate_limit:\n      unit: hour\n      algorithm: sliding_log\n"
     "      requests_per_unit: 50000\n", 7, "sliding_log keeps one entry per unit: at most"),
    (rl("{unit: second, requests_per_unit: 5, burst: 4294967296}"), 4,
     "burst must be between 1 and 4294967295"),
    ("domain: d\ndescriptors:\n" + "".join(
        f"{'  ' * (2 * i + 1)}- key: k{i}\n{'  ' * (2 * i + 2)}descriptors:\n" for i in range(33)
    ) + "  " * 67 + "- key: last\n", 67, "nest more than 32 levels deep"),
    ("domain: d\ndescriptors: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nests too deeply"),
    (rl("{unit: second, requests_per_unit: 0, algorithm: gcra}"), 4,
     "a rule of 0 requests refuses every request: it takes no algorithm"),
    (rl("{unit: second, requests_per_unit: 1, replaces: other}"), 4, "replaces must be a list"),
    (f"{HEAD}    rate_limit:\n      unit: second\n      requests_per_unit: 1\n"
     "      replaces:\n        - nme: x\n", 8, "unknown key 'nme' in a replaces entry"),
    (rl("{unit: second, requests_per_unit: 1, replaces: [{name: ''}]}"), 4, "empty name"),
    (rl("{unit: second, requests_per_unit: 1, name: me, replaces: [{name: me}]}"), 4,
     "a rule cannot replace itself ('me')"),
    (f"{HEAD}    value: exact\n    share_threshold: true\n    rate_limit: {{}}\n", 5,
     "share_threshold applies to a wildcard value"),
    (f"{HEAD}    value_to_metric: yes please\n", 4, "value_to_metric must be true or false"),
    (rl("{unit: second, requests_per_unit: 5, algorithm: fixed_window, burst: 9}"), 4,
     "burst applies to the gcra"),
    (rl("{unit: second, requests_per_unit: 1}") + "  - key: a\n    rate_limit: {}\n", 5,
     "duplicate descriptor composite key 'd.a' (as a=* above)"),
    (f"{HEAD}    shadow_mode: maybe\n    rate_limit: {{unit: second, requests_per_unit: 1}}\n",
     4, "shadow_mode must be true or false"),
    ("descriptors: []\n", 1, "missing 'domain'"),
    ("", 1, "the file is empty"),
    (rl("{unit: second"), 5, "invalid YAML"),
    ("domain: d\ndescriptors:\n  key: a\n", 3, "descriptors must be a list"),
    (rl("{unlimited: true, unit: second}"), 4, "an unlimited rule takes no unit"),
    (f"{HEAD}    rate_limit:\n      unit: second\n      requests_per_unit: 5\n"
     "      algorithm: sliding_log\n      prefetch: true\n", 8, "prefetch applies to the gcra"),
    (rl("{unit: second, requests_per_unit: 5, prefetch: sometimes}"), 4,
     "prefetch must be true or false"),
    (rl("{unlimited: true, prefetch: true}"), 4, "an unlimited rule takes no prefetch"),
    # Tags and characters the YAML library itself rejects still leave as RulesError.
    (rl("{unit: hour, requests_per_unit: !!int ten}"), 4,
     "requests_per_unit must be an integer, got 'ten'"),
    (rl("{unit: hour, requests_per_unit: !!python/name:os.system 5}"), 4,
     "could not determine a constructor"),
    (rl("{unit: hour, requests_per_unit: 5, burst: !!float x}"), 4, "burst must be an integer"),
    ("domain: api\x0c\ndescriptors: []\n", 1, "invalid YAML: character '\\x0c'"),
    (f"{HEAD}\x07    rate_limit: {{unit: hour, requests_per_unit: 1}}\n", 4, "invalid YAML"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_invalid_files_name_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(RulesError) as err:
        parse_text(text, "rules.yaml")
    assert err.value.detail.startswith(f"rules.yaml:{line}: "), err.value.detail
    assert message in err.value.detail
    assert err.value.extra["line"] == line


def test_a_folder_holds_several_domains(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(ENVOY_FILE)
    (tmp_path / "b.yml").write_text(ENVOY_FILE.replace("mongo_cps", "other"))
    (tmp_path / "notes.txt").write_text("ignored")
    assert sorted(load_rules(tmp_path).domains) == ["mongo_cps", "other"]
    (tmp_path / "c.yaml").write_text(ENVOY_FILE)
    with pytest.raises(RulesError, match="already defined in"):
        load_rules(tmp_path)
    with pytest.raises(RulesError, match="no such file"):
        load_rules(tmp_path / "missing.yaml")
