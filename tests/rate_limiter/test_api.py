"""The HTTP service in-process (ASGI over httpx), on a real Redis."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.rate_limiter.factories import check_body, client_for, script_calls, write_rules


def edit(path: Path, text: str) -> None:
    path.write_text(text)


def rules_text(path: Path) -> str:
    return path.read_text()


def assert_problem(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    return resp.json()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write_rules(tmp_path)


async def test_check_allows_then_refuses_with_draft_headers(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        for i in range(5):
            resp = await client.post("/api/check", json=check_body(("user", "u1")))
            assert resp.status_code == 200
            body = resp.json()
            assert body["allowed"] is True
            [d] = body["decisions"]
            assert d["rule"] == "api.user" and d["remaining"] == 4 - i and d["limit"] == 5
            assert resp.headers["RateLimit-Policy"] == '"api.user";q=5;w=3600'
            assert resp.headers["RateLimit"].startswith(f'"api.user";r={4 - i};t=')
        resp = await client.post("/api/check", json=check_body(("user", "u1")))
        assert resp.status_code == 200
        body = resp.json()
        assert body["allowed"] is False
        assert body["decisions"][0]["retry_after"] > 0
        assert int(resp.headers["Retry-After"]) >= 1
        # Another user is untouched.
        resp = await client.post("/api/check", json=check_body(("user", "u2")))
        assert resp.json()["allowed"] is True


async def test_nested_rules_all_apply(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        body = check_body(("user", "u1"), ("action", "upload"))
        results = [(await client.post("/api/check", json=body)).json() for _ in range(3)]
        assert [r["allowed"] for r in results] == [True, True, False]
        assert [d["rule"] for d in results[2]["decisions"]] == [
            "api.user",
            "api.user.action_upload",
        ]
        assert [d["allowed"] for d in results[2]["decisions"]] == [True, False]
        resp = await client.post("/api/check", json=check_body(("user", "u1"), ("action", "x")))
        assert resp.headers["RateLimit-Policy"] == '"api.user";q=5;w=3600'


async def test_cost_above_capacity_is_refused(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        resp = await client.post("/api/check", json=check_body(("user", "u"), cost=6))
        body = resp.json()
        assert body["allowed"] is False and body["decisions"][0]["retry_after"] is None
        assert "Retry-After" not in resp.headers
        resp = await client.post("/api/check", json=check_body(("user", "u"), cost=5))
        assert resp.json()["allowed"] is True


async def test_shadow_mode_counts_but_never_refuses(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        bodies = [
            (await client.post("/api/check", json=check_body(("ip", "1.2.3.4")))).json()
            for _ in range(4)
        ]
        assert all(b["allowed"] for b in bodies)
        assert [b["decisions"][0]["allowed"] for b in bodies] == [True, True, False, False]
        assert all(b["decisions"][0]["shadow_mode"] for b in bodies)
        metrics = (await client.get("/metrics")).text
        assert 'rate_limiter_shadow_refusals_total{domain="api",rule="api.ip"} 2.0' in metrics
        assert (
            'rate_limiter_decisions_total{domain="api",outcome="shadow_refused",rule="api.ip"} 2.0'
            in metrics
        )
        assert 'rate_limiter_near_limit_total{domain="api",rule="api.ip"} 1.0' in metrics


async def test_unlimited_and_unmatched(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        for entries in ([("vip", "x")], [("nothing", "here")]):
            resp = await client.post("/api/check", json=check_body(*entries, cost=1000))
            assert resp.json() == {"allowed": True, "decisions": [], "metadata": None}
            assert "RateLimit" not in resp.headers


async def test_concurrency_lease_and_release(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        first = (await client.post("/api/check", json=check_body(("job", "j")))).json()
        lease = first["decisions"][0]["lease"]
        assert first["allowed"] and lease
        second = (await client.post("/api/check", json=check_body(("job", "j")))).json()
        assert not second["allowed"]
        body = {"domain": "api", "descriptors": [{"key": "job", "value": "j"}], "lease": lease}
        resp = await client.post("/api/release", json=body)
        assert resp.json() == {"released": 1}
        third = (await client.post("/api/check", json=check_body(("job", "j")))).json()
        assert third["allowed"]
        # Released already, or never granted: nothing was held, and the answer says so.
        assert (await client.post("/api/release", json=body)).json() == {"released": 0}
        never = {**body, "lease": "0" * 32 + ".1"}
        assert (await client.post("/api/release", json=never)).json() == {"released": 0}


async def test_usage_inspects_without_consuming(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        await client.post("/api/check", json=check_body(("user", "u1"), cost=3))
        for _ in range(3):
            resp = await client.get(
                "/api/usage", params={"domain": "api", "key": ["user"], "value": ["u1"]}
            )
            assert resp.status_code == 200
            assert resp.json()["decisions"][0]["remaining"] == 2
        assert resp.headers["RateLimit"].startswith('"api.user";r=2;')
        resp = await client.get("/api/usage", params={"domain": "api", "key": ["user", "a"]})
        assert "one value per key" in assert_problem(resp, 422)["detail"]
        assert_problem(await client.get("/api/usage", params={"domain": "api"}), 422)


async def test_rules_endpoint(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        body = (await client.get("/api/rules")).json()
    assert body["path"] == str(rules) and body["last_error"] is None
    [domain] = body["domains"]
    by_name = {r["name"]: r for r in domain["rules"]}
    assert by_name["api.user.action_upload"]["descriptor"] == "user=* > action=upload"
    assert by_name["api.user.action_upload"]["algorithm"] == "sliding_log"
    assert by_name["api.ip"]["shadow_mode"] is True
    assert by_name["api.vip"]["unlimited"] is True
    assert by_name["api.user"]["source"].endswith("rules.yaml:6")
    assert domain["allowlisted"] == []


ALLOWLIST = """\
domain: api
algorithm: gcra
descriptors:
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: ip
    value: 10.0.0.1
  - key: user
    descriptors:
      - key: route
        value: /health
      - key: route
        rate_limit: {unit: hour, requests_per_unit: 1}
"""


async def test_rules_endpoint_lists_allowlist_entries(tmp_path: Path, redis_url: str) -> None:
    """Envoy's allowlist entries (no rate_limit, nothing nested) are listed, so that an
    operator can see why a value is not limited; a node with nested descriptors is not one."""
    async with client_for(write_rules(tmp_path, ALLOWLIST), redis_url) as client:
        [domain] = (await client.get("/api/rules")).json()["domains"]
        assert domain["allowlisted"] == ["ip=10.0.0.1", "user=* > route=/health"]
        assert [r["descriptor"] for r in domain["rules"]] == ["ip=*", "user=* > route=*"]
        for ip, refused in [("10.0.0.1", False)] * 2 + [("10.0.0.2", False), ("10.0.0.2", True)]:
            body = (await client.post("/api/check", json=check_body(("ip", ip)))).json()
            assert body["allowed"] is not refused


BAD_REQUESTS = [
    ({"domain": "api", "descriptors": []}, 422),
    ({"domain": "", "descriptors": [{"key": "user", "value": "u"}]}, 422),
    ({"domain": "api", "descriptors": [{"value": "u"}]}, 422),
    ({"domain": "api", "descriptors": [{"key": "user", "value": "u"}], "cost": 0}, 422),
    ({"domain": "api", "descriptors": [{"key": "user", "value": "u"}], "cost": -3}, 422),
    ({"domain": "api", "descriptors": [{"key": "user", "value": "u"}], "cost": "lots"}, 422),
    ({"domain": "api", "descriptors": [{"key": "user", "value": "u"}], "cost": True}, 422),
    ({"domain": "api", "descriptors": [{"key": "user", "value": "u"}], "cost": "3"}, 422),
    ({"domain": "api", "descriptors": "user=u"}, 422),
    ([1, 2, 3], 422),
]


@pytest.mark.parametrize(("body", "status"), BAD_REQUESTS)
async def test_bad_requests_are_problems(
    rules: Path, redis_url: str, body: object, status: int
) -> None:
    async with client_for(rules, redis_url) as client:
        assert_problem(await client.post("/api/check", json=body), status)


async def test_malformed_json_is_400(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        resp = await client.post(
            "/api/check", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert_problem(resp, 400)


async def test_reload_keeps_consumption_and_survives_bad_edits(rules: Path, redis_url: str) -> None:
    async with client_for(rules, redis_url) as client:
        for _ in range(4):
            await client.post("/api/check", json=check_body(("user", "u1")))
        edit(rules, rules_text(rules).replace("requests_per_unit: 5", "requests_per_unit: 6"))

        async def reloaded() -> dict:
            for _ in range(100):
                body = (await client.get("/api/rules")).json()
                if body["reloads"] >= 1 or body["last_error"]:
                    return body
                await asyncio.sleep(0.02)
            raise AssertionError("no reload")

        assert (await reloaded())["reloads"] == 1
        # 4 of 6 used: two more, not six.
        results = [
            (await client.post("/api/check", json=check_body(("user", "u1")))).json()["allowed"]
            for _ in range(3)
        ]
        assert results == [True, True, False]
        edit(rules, "domain: api\ndescriptors:\n  - key: user\n    rate_limit: 7\n")
        body = await reloaded()
        for _ in range(100):
            body = (await client.get("/api/rules")).json()
            if body["last_error"]:
                break
            await asyncio.sleep(0.02)
        assert "rules.yaml:4: rate_limit must be a mapping" in body["last_error"]
        resp = await client.post("/api/check", json=check_body(("user", "u2")))
        assert resp.json()["decisions"][0]["limit"] == 6  # the last good rules


async def test_without_redis_the_memory_backend_serves(rules: Path) -> None:
    async with client_for(rules, None) as client:
        results = [
            (await client.post("/api/check", json=check_body(("user", "u")))).json()["allowed"]
            for _ in range(6)
        ]
        assert results == [True] * 5 + [False]
        assert (await client.get("/readyz")).status_code == 200


NESTED = """\
domain: api
apply_limits: every_level
algorithm: gcra
descriptors:
  - key: job
    rate_limit: {unit: minute, requests_per_unit: 2, algorithm: concurrency}
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 1}
"""


async def test_a_refused_check_gives_back_the_leases_it_was_granted(
    tmp_path: Path, redis_url: str
) -> None:
    rules = write_rules(tmp_path, NESTED)
    async with client_for(rules, redis_url) as client:
        first = (
            await client.post("/api/check", json=check_body(("job", "j"), ("user", "u")))
        ).json()
        assert first["allowed"] and first["decisions"][0]["lease"]  # one of two slots held
        # The per-user rule refuses; the concurrency rule granted a slot, which goes back.
        second = (
            await client.post("/api/check", json=check_body(("job", "j"), ("user", "u")))
        ).json()
        assert not second["allowed"]
        assert second["decisions"][0]["allowed"] and second["decisions"][0]["lease"] is None
        third = (await client.post("/api/check", json=check_body(("job", "j")))).json()
        assert third["allowed"]  # the second slot was free again


SHARED = """\
domain: api
apply_limits: every_level
algorithm: gcra
descriptors:
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 5}
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 2}
        descriptors:
          - key: action
            value: export
            rate_limit: {unit: hour, requests_per_unit: 1, count_refused: true}
  - key: region
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: sliding_window}
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 1, algorithm: fixed_window}
"""


async def test_a_refused_check_uses_up_no_other_rules_quota(tmp_path: Path, redis_url: str) -> None:
    """A user's refused requests leave the tenant's shared quota to the other users (Envoy's
    ratelimit would have let user u1 use it all up); a rule with count_refused keeps its
    count; a shadow rule counts what an enforced one would."""
    rules = write_rules(tmp_path, SHARED)

    async def check(*entries: tuple[str, str]) -> dict:
        resp = await client.post("/api/check", json=check_body(*entries))
        assert resp.status_code == 200
        return resp.json()

    async with client_for(rules, redis_url) as client:
        u1 = [await check(("tenant", "t"), ("user", "u1")) for _ in range(6)]
        assert [r["allowed"] for r in u1] == [True, True, False, False, False, False]
        # The tenant's rule allowed each refused check and was given its unit back.
        assert all(r["decisions"][0]["remaining"] == 3 for r in u1[2:])
        u2 = [await check(("tenant", "t"), ("user", "u2")) for _ in range(2)]
        assert all(r["allowed"] for r in u2)
        u3 = [await check(("tenant", "t"), ("user", "u3")) for _ in range(2)]
        assert [r["allowed"] for r in u3] == [True, False]  # the tenant's 5th, then none left
        tenant, user = u3[1]["decisions"]
        assert (tenant["allowed"], user["allowed"], user["remaining"]) == (False, True, 1)
        # count_refused: the export rule keeps the unit a refused check took; the rest not.
        export = await check(("tenant", "t"), ("user", "u4"), ("action", "export"))
        assert not export["allowed"]
        assert [(d["allowed"], d["remaining"]) for d in export["decisions"]] == [
            (False, 0),
            (True, 2),
            (True, 0),
        ]
        usage = await client.get(
            "/api/usage",
            params={
                "domain": "api",
                "key": ["tenant", "user", "action"],
                "value": ["t", "u4", "export"],
            },
        )
        assert [d["remaining"] for d in usage.json()["decisions"]] == [0, 2, 0]
        # Shadow mode: refused by the enforced rule beneath it, the request is not counted.
        u5 = [await check(("region", "r"), ("user", "u5")) for _ in range(3)]
        assert [r["allowed"] for r in u5] == [True, False, False]
        assert [r["decisions"][0]["remaining"] for r in u5] == [2, 2, 2]
        text = (await client.get("/metrics")).text
        assert 'rate_limiter_refunds_total{domain="api",rule="api.region"} 2.0' in text
        assert 'rate_limiter_refunds_total{domain="api",rule="api.tenant"} 4.0' in text
        assert 'rate_limiter_refunds_total{domain="api",rule="api.tenant.user"} 2.0' in text
        assert "rate_limiter_shadow_refusals_total{" not in text


async def test_concurrent_refused_checks_leave_no_units_taken(
    tmp_path: Path, redis_url: str
) -> None:
    """30 checks at once by 10 users: never more than the tenant's 5 admitted, and afterwards
    each rule holds exactly what the admitted checks took (every refused check's units,
    whichever rule refused it, came back)."""
    rules = write_rules(tmp_path, SHARED)
    users = [f"u{i}" for i in range(10)] * 3
    async with client_for(rules, redis_url) as client:
        replies = await asyncio.gather(
            *(
                client.post("/api/check", json=check_body(("tenant", "t"), ("user", u)))
                for u in users
            )
        )
        admitted = [u for u, r in zip(users, replies, strict=True) if r.json()["allowed"]]
        assert 1 <= len(admitted) <= 5

        async def remaining(*values: str) -> list[int]:
            params = {"domain": "api", "key": ["tenant", "user"][: len(values)], "value": values}
            resp = await client.get("/api/usage", params=params)
            return [d["remaining"] for d in resp.json()["decisions"]]

        assert await remaining("t") == [5 - len(admitted)]
        for u in sorted(set(users)):
            assert (await remaining("t", u))[1] == 2 - admitted.count(u), u


BUSY = """\
domain: api
algorithm: gcra
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5, prefetch: true}
  - key: tenant
    rate_limit: {unit: second, requests_per_unit: 100000, prefetch: true}
  - key: region
    rate_limit: {unit: second, requests_per_unit: 100000}
"""


async def test_rules_that_opt_in_spare_redis_on_a_busy_key_and_the_rest_stay_exact(
    tmp_path: Path, redis_url: str, redis: Redis
) -> None:
    async def checks(client: httpx.AsyncClient, entry: tuple[str, str], n: int) -> int:
        """Script calls for n checks one after another (checks made together would share
        one script call anyway)."""
        before = await script_calls(redis)
        answers = [await client.post("/api/check", json=check_body(entry)) for _ in range(n)]
        assert all(a.status_code == 200 and a.json()["allowed"] for a in answers)
        return await script_calls(redis) - before

    rules = write_rules(tmp_path, BUSY)
    # The service's default, RATE_LIMITER_PREFETCH=rules: rules that say `prefetch: true`.
    async with client_for(rules, redis_url, prefetch_ttl=0.5, prefetch_share=0.1) as client:
        # 5 an hour: capacity x share < 2, so every check still asks Redis: exact.
        small = [
            (await client.post("/api/check", json=check_body(("user", "u")))).json()["allowed"]
            for _ in range(6)
        ]
        assert small == [True] * 5 + [False]
        assert await checks(client, ("tenant", "t"), 200) < 200 / 4
        assert await checks(client, ("region", "r"), 100) == 100  # not opted in: exact
        # Operators see it: batches fetched against decisions made, and which rules do.
        text = (await client.get("/metrics")).text
        fetched = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("rate_limiter_prefetch_fetches_total ")
        )
        assert 6 <= fetched < 6 + 200 / 4  # (the 6 small-limit checks, one each)
        listed = (await client.get("/api/rules")).json()["domains"][0]["rules"]
        assert [r["prefetch"] for r in listed] == [True, True, None]
    # RATE_LIMITER_PREFETCH=all: every gcra rule but those that say `prefetch: false`.
    async with client_for(rules, redis_url, prefetch="all", prefetch_share=0.1) as client:
        assert await checks(client, ("region", "r2"), 100) < 100 / 4
    # RATE_LIMITER_PREFETCH=off: none, whatever the rules say; and a ttl of 0 (the earlier
    # way to say off) is off too.
    async with client_for(rules, redis_url, prefetch="off") as client:
        assert await checks(client, ("tenant", "t2"), 100) == 100
    async with client_for(rules, redis_url, prefetch_ttl=0) as client:
        assert await checks(client, ("tenant", "t3"), 50) == 50


EDGE = """\
domain: edge
algorithm: gcra
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: remote_address
    value: 198.51.100.7
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: remote_address
    value: 198.51.100.8
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2, name: per_user}
    descriptors:
      - key: route
        value: /bulk
        rate_limit: {unit: hour, requests_per_unit: 20, replaces: [{name: per_user}]}
"""


async def test_envoy_blocklist_entries_and_replaces_through_the_service(
    tmp_path: Path, redis_url: str
) -> None:
    rules = write_rules(tmp_path, EDGE)
    async with client_for(rules, redis_url) as client:
        # requests_per_unit: 0 refuses every request, and waiting does not help.
        resp = await client.post(
            "/api/check", json=check_body(("remote_address", "198.51.100.7"), domain="edge")
        )
        body = resp.json()
        assert resp.status_code == 200 and body["allowed"] is False
        assert body["decisions"] == [
            {"rule": "edge.remote_address_198.51.100.7", "allowed": False, "shadow_mode": False,
             "limit": 0, "remaining": 0, "reset_after": 60.0, "retry_after": None,
             "lease": None, "descriptor": 0, "degraded": False}
        ]  # fmt: skip
        assert resp.headers["RateLimit-Policy"] == '"edge.remote_address_198.51.100.7";q=0;w=60'
        assert "Retry-After" not in resp.headers
        # In shadow mode it is only counted as a would-be refusal.
        shadow = check_body(("remote_address", "198.51.100.8"), domain="edge")
        assert (await client.post("/api/check", json=shadow)).json()["allowed"] is True
        text = (await client.get("/metrics")).text
        assert 'rule="edge.remote_address_198.51.100.8"' in text.split("shadow_refusals")[-1]
        # Other addresses get the general limit.
        other = check_body(("remote_address", "198.51.100.9"), domain="edge")
        assert (await client.post("/api/check", json=other)).json()["allowed"] is True
        usage = await client.get(
            "/api/usage",
            params={"domain": "edge", "key": "remote_address", "value": "198.51.100.7"},
        )
        assert usage.status_code == 200 and usage.json()["allowed"] is False

        # `replaces`: on /bulk the route's 20 an hour stands in for the user's 2 an hour.
        bulk = check_body(("user", "u"), ("route", "/bulk"), domain="edge")
        answers = [(await client.post("/api/check", json=bulk)).json() for _ in range(5)]
        assert all(a["allowed"] for a in answers)
        assert {d["rule"] for a in answers for d in a["decisions"]} == {"edge.user.route_/bulk"}
        # ... and the user's own limit was not touched by them.
        plain = check_body(("user", "u"), domain="edge")
        mine = [(await client.post("/api/check", json=plain)).json() for _ in range(3)]
        assert [a["allowed"] for a in mine] == [True, True, False]
        listed = (await client.get("/api/rules")).json()["domains"][0]["rules"]
        assert [(r["name"], r["blocks"], r["replaces"]) for r in listed][-2:] == [
            ("per_user", False, []), ("edge.user.route_/bulk", False, ["per_user"])
        ]  # fmt: skip


ENVOY = """\
domain: rl
descriptors:
  - key: foo
    descriptors:
      - key: bar
        value: bkthomps
        rate_limit: {name: bkthomps, unit: day, requests_per_unit: 1}
  - key: category
    value: account
    rate_limit:
      unit: day
      requests_per_unit: 4
      replaces: [{name: bkthomps}]
"""


async def test_a_check_takes_several_descriptors_as_envoys_do(
    tmp_path: Path, redis_url: str
) -> None:
    foo = {"entries": [{"key": "foo", "value": "f"}, {"key": "bar", "value": "bkthomps"}]}
    account = {"entries": [{"key": "category", "value": "account"}], "hits_addend": 2}
    async with client_for(write_rules(tmp_path, ENVOY), redis_url) as client:
        both = {"domain": "rl", "descriptors": [foo, account]}
        first = (await client.post("/api/check", json=both)).json()
        # The account descriptor replaces the bkthomps limit: only its own decides, at 2.
        assert first["allowed"] and [(d["rule"], d["descriptor"]) for d in first["decisions"]] == [
            ("rl.category_account", 1)
        ]
        assert first["decisions"][0]["remaining"] == 2
        alone = {"domain": "rl", "descriptors": [foo]}
        assert [(await client.post("/api/check", json=alone)).json()["allowed"] for _ in "ab"] == [
            True,
            False,
        ]
        # An unknown domain has no rules: OK, as Envoy answers.
        unknown = await client.post("/api/check", json={**both, "domain": "nope"})
        assert unknown.status_code == 200 and unknown.json() == {
            "allowed": True,
            "decisions": [],
            "metadata": None,
        }
        mixed = {"domain": "rl", "descriptors": [foo, {"key": "a", "value": "b"}]}
        assert (await client.post("/api/check", json=mixed)).status_code == 422
        metrics = (await client.get("/metrics")).text
        assert (
            'ratelimit_service_rate_limit_over_limit{domain="rl",key1="foo",key2="bar_bkthomps"}'
            " 1.0" in metrics
        )
        assert (
            'ratelimit_service_rate_limit_total_hits{domain="rl",key1="category_account",key2=""}'
            " 2.0" in metrics
        )


async def test_a_refused_lease_says_retry_in_a_second_not_at_its_expiry(
    rules: Path, redis_url: str
) -> None:
    """A slot frees when its holder releases it (unforeseeable), not only when the lease
    expires a minute later: the refusal asks for a retry in a second."""
    async with client_for(rules, redis_url) as client:
        held = (await client.post("/api/check", json=check_body(("job", "j")))).json()
        assert held["allowed"] and held["decisions"][0]["lease"]
        refused = await client.post("/api/check", json=check_body(("job", "j")))
        assert not refused.json()["allowed"]
        assert refused.headers["Retry-After"] == "1"
        assert 0 < refused.json()["decisions"][0]["retry_after"] <= 1


async def test_a_taken_grpc_port_leaves_the_http_api_up_and_says_so(
    rules: Path, redis_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with client_for(rules, redis_url, grpc_port=port) as client:
            assert (await client.post("/api/check", json=check_body(("user", "u")))).json()[
                "allowed"
            ]
            ready = (await client.get("/readyz")).json()
            assert ready["dependencies"]["grpc"]["status"] == "down"
