"""GET /{code}: statuses, caching, limits, passwords, visit recording."""

import asyncio
import contextlib
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aredis
from fastapi import FastAPI
from sqlalchemy import event, text

from tests.url_shortener.conftest import ADMIN, assert_problem, make_link, settle_visits
from url_shortener.cache import (
    REFRESH_BATCH,
    CachedLink,
    LinkCache,
    LocalCache,
    Mode,
    Outcome,
    link_key,
    version_key,
)


class SqlCounter:
    """Counts SQL statements that read the links table (the redirect's SQL fallback)."""

    def __init__(self, app: FastAPI) -> None:
        self.link_reads = 0
        self.engine = app.state.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._on)

    def _on(self, conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM links" in statement:
            self.link_reads += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_uses_the_links_status(client: httpx.AsyncClient, status: int) -> None:
    code = (await make_link(client, url="https://example.com/x?y=1", redirect_status=status))[
        "code"
    ]
    resp = await client.get(f"/{code}")
    assert resp.status_code == status
    assert resp.headers["location"] == "https://example.com/x?y=1"
    cache_control = resp.headers["cache-control"]
    if status in (301, 308):
        assert cache_control == "private, max-age=90"
    else:
        assert cache_control == "private, no-store"


async def test_default_is_302_and_unicode_targets_are_percent_encoded(
    client: httpx.AsyncClient,
) -> None:
    code = (await make_link(client, url="https://example.com/straße?q=ü"))["code"]
    resp = await client.get(f"/{code}")
    assert resp.status_code == 302
    assert resp.headers["location"] == "https://example.com/stra%C3%9Fe?q=%C3%BC"


async def test_unknown_codes_are_404_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/zzzzzzz"), 404)
    assert_problem(await client.get("/has.dot"), 404)
    assert_problem(await client.get("/" + "x" * 300), 404)
    assert (await client.head("/zzzzzzz")).status_code == 404


async def test_cache_hit_never_touches_sql(client: httpx.AsyncClient, app: FastAPI) -> None:
    code = (await make_link(client))["code"]
    counter = SqlCounter(app)
    try:
        assert (await client.get(f"/{code}")).status_code == 302  # miss: one SQL read
        first = counter.link_reads
        assert first >= 1
        for _ in range(20):
            assert (await client.get(f"/{code}")).status_code == 302
        assert counter.link_reads == first
    finally:
        counter.close()


async def test_unknown_codes_are_negatively_cached_and_creation_clears_it(
    client: httpx.AsyncClient, app: FastAPI, redis_url: str
) -> None:
    counter = SqlCounter(app)
    try:
        assert_problem(await client.get("/later-alias"), 404)
        reads = counter.link_reads
        assert_problem(await client.get("/later-alias"), 404)
        assert counter.link_reads == reads  # answered by the negative cache
    finally:
        counter.close()
    async with aredis.Redis.from_url(redis_url) as r:
        assert 0 < await r.ttl(link_key("later-alias")) <= 60
    await make_link(client, alias="later-alias")
    assert (await client.get("/later-alias")).status_code == 302


async def test_cache_entries_have_a_ttl_bounded_by_expiry(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    code = (await make_link(client, expires_at=expires))["code"]
    await client.get(f"/{code}")
    async with aredis.Redis.from_url(redis_url) as r:
        assert 100 <= await r.ttl(link_key(code)) <= 120


async def test_expired_links_are_410(client: httpx.AsyncClient) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=1.2)).isoformat()
    code = (await make_link(client, expires_at=expires))["code"]
    assert (await client.get(f"/{code}")).status_code == 302
    await asyncio.sleep(1.5)
    assert_problem(await client.get(f"/{code}"), 410)
    assert_problem(await client.get(f"/{code}"), 410)  # now from the cache


async def test_max_visits_is_exact_under_concurrency(client: httpx.AsyncClient) -> None:
    code = (await make_link(client, max_visits=25))["code"]
    responses = await asyncio.gather(*(client.get(f"/{code}") for _ in range(80)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(302) == 25
    assert statuses.count(410) == 55


async def test_head_does_not_count_a_visit(client: httpx.AsyncClient, app: FastAPI) -> None:
    code = (await make_link(client, max_visits=1))["code"]
    for _ in range(3):
        resp = await client.head(f"/{code}")
        assert resp.status_code == 302 and resp.headers["location"]
    assert (await client.get(f"/{code}")).status_code == 302
    assert (await client.head(f"/{code}")).status_code == 410
    assert (await client.get(f"/{code}")).status_code == 410
    await settle_visits(app)
    assert (await client.get(f"/api/links/{code}", headers=ADMIN)).json()["visits"] == 1


async def test_update_and_delete_invalidate_the_cache(client: httpx.AsyncClient) -> None:
    code = (await make_link(client, url="https://example.com/old"))["code"]
    assert (await client.get(f"/{code}")).headers["location"] == "https://example.com/old"
    await client.patch(f"/api/links/{code}", json={"url": "https://example.com/new"}, headers=ADMIN)
    assert (await client.get(f"/{code}")).headers["location"] == "https://example.com/new"
    await client.delete(f"/api/links/{code}", headers=ADMIN)
    assert_problem(await client.get(f"/{code}"), 404)


async def test_raising_max_visits_keeps_what_was_used(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    code = (await make_link(client, max_visits=2))["code"]
    assert [(await client.get(f"/{code}")).status_code for _ in range(3)] == [302, 302, 410]
    await client.patch(f"/api/links/{code}", json={"max_visits": 3}, headers=ADMIN)
    assert [(await client.get(f"/{code}")).status_code for _ in range(2)] == [302, 410]
    link = (await client.get(f"/api/links/{code}", headers=ADMIN)).json()
    assert link["visits"] == 3  # claims are counted in SQL at once


async def test_password_form_then_right_and_wrong_password(client: httpx.AsyncClient) -> None:
    code = (await make_link(client, url="https://example.com/secret", password="s3cret"))["code"]
    form = await client.get(f"/{code}")
    assert form.status_code == 200
    assert form.headers["content-type"].startswith("text/html")
    assert form.headers["cache-control"] == "no-store"
    assert 'type="password"' in form.text and "example.com" not in form.text
    wrong = await client.post(f"/{code}", data={"password": "nope"})
    assert wrong.status_code == 401 and "Wrong password" in wrong.text
    assert "location" not in wrong.headers
    empty = await client.post(f"/{code}", content=b"", headers={"content-type": "text/plain"})
    assert empty.status_code == 401
    right = await client.post(f"/{code}", data={"password": "s3cret"})
    assert right.status_code == 303
    assert right.headers["location"] == "https://example.com/secret"
    assert_problem(await client.post("/nosuchcode", data={"password": "x"}), 404)


async def test_posting_to_an_unknown_or_unprotected_link_is_not_a_wrong_password(
    client: httpx.AsyncClient,
) -> None:
    for body in ({"password": "x"}, {}):
        unknown = assert_problem(await client.post("/nosuchcode", data=body), 404)
        assert "Wrong password" not in unknown["detail"]
    code = (await make_link(client))["code"]
    for body in ({"password": "x"}, {}):
        open_link = assert_problem(await client.post(f"/{code}", data=body), 405)
        assert open_link["title"] == "Link has no password"
    assert (await client.get(f"/{code}")).status_code == 302


async def test_an_international_target_redirects_to_its_idna_host(
    client: httpx.AsyncClient,
) -> None:
    code = (await make_link(client, url="https://例え.jp/パス?q=ü"))["code"]
    for _ in range(2):  # from Redis, then from the in-process cache
        resp = await client.get(f"/{code}")
        assert resp.status_code == 302
        assert resp.headers["location"] == "https://xn--r8jz45g.jp/%E3%83%91%E3%82%B9?q=%C3%BC"
    port = (await make_link(client, url="http://Bücher.example:8080/"))["code"]
    assert (await client.get(f"/{port}")).headers[
        "location"
    ] == "http://xn--bcher-kva.example:8080/"


async def test_password_plus_max_visits_counts_only_unlocked_visits(
    client: httpx.AsyncClient,
) -> None:
    code = (await make_link(client, password="pw", max_visits=1))["code"]
    for _ in range(3):
        assert (await client.get(f"/{code}")).status_code == 200  # the form: no visit used
    assert (await client.post(f"/{code}", data={"password": "pw"})).status_code == 303
    assert_problem(await client.post(f"/{code}", data={"password": "pw"}), 410)


async def test_visits_are_recorded_with_analytics(client: httpx.AsyncClient, app: FastAPI) -> None:
    code = (await make_link(client))["code"]
    chrome = "Mozilla/5.0 (X11) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
    firefox = "Mozilla/5.0 (X11; rv:127.0) Gecko/20100101 Firefox/127.0"
    for ua, ref in [
        (chrome, "https://news.ycombinator.com/item?id=1"),
        (chrome, "https://news.ycombinator.com/"),
        (firefox, "https://t.co/abc"),
        ("Googlebot/2.1", ""),
    ]:
        await client.get(f"/{code}", headers={"user-agent": ua, "referer": ref})
    await settle_visits(app)
    stats = (await client.get(f"/api/links/{code}/stats", headers=ADMIN)).json()
    assert stats["total"] == 4
    assert stats["unique_visitors"] == 3  # same IP + same UA twice
    assert stats["humans"] == 3 and stats["bots"] == 1
    assert stats["top_referrers"][0] == {"referrer": "news.ycombinator.com", "visits": 2}
    assert {"browser": "Chrome", "visits": 2} in stats["browsers"]
    today = datetime.now(UTC).date().isoformat()
    assert stats["per_day"] == [{"day": today, "visits": 4}]
    link = (await client.get(f"/api/links/{code}", headers=ADMIN)).json()
    assert link["visits"] == 4

    csv = await client.get(f"/api/links/{code}/stats?format=csv", headers=ADMIN)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().split("\r\n")
    assert lines[0].startswith("timestamp,referrer_host,browser,is_bot")
    assert len(lines) == 5 and "news.ycombinator.com" in lines[1]
    assert "203.0.113.7" not in csv.text  # IPs are never stored
    assert_problem(await client.get("/api/links/nope/stats", headers=ADMIN), 404)


async def test_visits_of_a_deleted_link_are_dropped_not_fatal(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    keep = (await make_link(client))["code"]
    gone = (await make_link(client))["code"]
    await client.get(f"/{gone}")
    await client.get(f"/{keep}")
    await client.delete(f"/api/links/{gone}", headers=ADMIN)
    await settle_visits(app)
    assert (await client.get(f"/api/links/{keep}", headers=ADMIN)).json()["visits"] == 1
    async with app.state.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM visits"))).scalar_one() == 1


async def test_unique_visitors_believe_forwarded_for_only_from_trusted_proxies(
    settings, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    from url_shortener.app import create_app

    for trusted, expected in (([], 1), (["203.0.113.0/24"], 3)):
        app = create_app(settings.model_copy(update={"trusted_proxies": trusted}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
            async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
                code = (await make_link(c))["code"]
                for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
                    await c.get(f"/{code}", headers={"x-forwarded-for": spoof})
                await settle_visits(app)
                stats = (await c.get(f"/api/links/{code}/stats", headers=ADMIN)).json()
        assert stats["total"] == 3
        assert stats["unique_visitors"] == expected


async def test_hot_links_are_served_from_process_memory(
    client: httpx.AsyncClient, redis_url: str
) -> None:
    code = (await make_link(client))["code"]
    limited = (await make_link(client, max_visits=10))["code"]
    for c in (code, limited):
        assert (await client.get(f"/{c}")).status_code == 302
    async with aredis.Redis.from_url(redis_url) as r:
        await r.delete(link_key(code), link_key(limited))
        await r.set(link_key("x"), "1")  # Redis keeps answering
        reads_before = await r.info("stats")
    hits = await local_hits(client)
    assert (await client.get(f"/{code}")).status_code == 302  # no Redis involved
    assert await local_hits(client) == hits + 1
    # Links with max_visits are never held locally: Redis is asked each time.
    async with aredis.Redis.from_url(redis_url) as r:
        assert (await client.get(f"/{limited}")).status_code == 302
        after = await r.info("stats")
        assert after["keyspace_misses"] > reads_before["keyspace_misses"]


async def local_cache_counts(c: httpx.AsyncClient) -> dict[str, float]:
    text = (await c.get("/metrics")).text
    return {
        name: float(re.search(rf"^url_shortener_local_cache_{name} (\S+)$", text, re.M)[1])  # type: ignore[index]
        for name in ("hits", "misses", "refreshes")
    }


async def local_hits(client: httpx.AsyncClient) -> float:
    return (await local_cache_counts(client))["hits"]


async def test_a_fill_racing_an_invalidation_cannot_resurrect_the_old_link(
    client: httpx.AsyncClient, app: FastAPI, redis_url: str
) -> None:
    links = app.state.links
    code = (await make_link(client, url="https://example.com/old"))["code"]
    old = await links.get(code)
    stale = CachedLink(old.id, old.url, 302, None, False, None)
    loads = 0

    async def racing_loader(c: str) -> CachedLink | None:
        # A reader missed and loaded the row from SQL; meanwhile the link is deleted (SQL
        # commit, then invalidation); the reader then fills with what it loaded.
        nonlocal loads
        loads += 1
        if loads == 1:
            await client.delete(f"/api/links/{code}", headers=ADMIN)
            return stale
        return await links._load(c)

    found = await links.cache.lookup(code, Mode.VISIT, racing_loader)
    assert found.outcome is Outcome.UNKNOWN  # the stale fill was refused; SQL read again
    assert loads == 2
    assert_problem(await client.get(f"/{code}"), 404)


async def test_a_negative_fill_racing_a_create_cannot_hide_the_new_alias(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    links = app.state.links

    async def racing_loader(c: str) -> CachedLink | None:
        loaded = await links._load(c)  # not there yet...
        if loaded is None:
            await make_link(client, alias="fresh-alias")  # ...created meanwhile
        return loaded

    found = await links.cache.lookup("fresh-alias", Mode.VISIT, racing_loader)
    assert found.outcome is Outcome.REDIRECT
    assert (await client.get("/fresh-alias")).status_code == 302


async def test_visit_limits_live_in_sql_not_in_redis(
    client: httpx.AsyncClient, app: FastAPI, redis_url: str
) -> None:
    """Redis losing everything (a restart without its data, a failover) gives no visit back."""
    code = (await make_link(client, max_visits=2))["code"]
    assert (await client.get(f"/{code}")).status_code == 302
    async with aredis.Redis.from_url(redis_url) as r:
        await r.flushall()
    assert (await client.get(f"/{code}")).status_code == 302
    async with aredis.Redis.from_url(redis_url) as r:
        await r.flushall()
    assert (await client.head(f"/{code}")).status_code == 410
    assert (await client.get(f"/{code}")).status_code == 410


async def test_an_expired_link_still_in_redis_is_410(
    client: httpx.AsyncClient, settings, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    """The expiry check in lua/redirect.lua itself: the Redis entry outlives the link (its
    TTL is whole seconds; clocks differ) and no in-process cache answers first."""
    from url_shortener.app import create_app

    app = create_app(settings.model_copy(update={"local_cache_ttl_seconds": 0}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
            code = (await make_link(c))["code"]
            assert (await c.get(f"/{code}")).status_code == 302  # cached in Redis now
            async with aredis.Redis.from_url(redis_url) as r:
                past = int(datetime.now(UTC).timestamp()) - 5
                await r.hset(link_key(code), "x", past)
                assert await r.ttl(link_key(code)) > 60
            assert_problem(await c.get(f"/{code}"), 410)
            assert (await c.head(f"/{code}")).status_code == 410


async def test_a_hot_link_never_misses_in_process_and_a_refresh_reads_redis_again(
    settings, redis_url: str
) -> None:  # type: ignore[no-untyped-def]
    """Refresh-ahead: a link followed again and again is read from Redis again before its
    in-process entry expires, so no request waits for Redis (under load such a miss made
    the redirect's p99: README, "Headline figures"). The refresh re-reads (a change made
    in Redis alone shows within the lifetime), it does not just extend the entry."""
    from url_shortener.app import create_app

    app = create_app(settings.model_copy(update={"local_cache_ttl_seconds": 1.0}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
            code = (await make_link(c, url="https://example.com/before"))["code"]
            assert (await c.get(f"/{code}")).status_code == 302  # the one miss: filled
            before = await local_cache_counts(c)
            async with aredis.Redis.from_url(redis_url) as r:
                # As if an invalidation were lost: only Redis knows the new target.
                await r.hset(link_key(code), "u", "https://example.com/after")
            locations = []
            for _ in range(35):  # 3.5 lifetimes of the entry
                await asyncio.sleep(0.1)
                resp = await c.get(f"/{code}")
                assert resp.status_code == 302
                locations.append(resp.headers["location"])
            after = await local_cache_counts(c)
    assert after["misses"] == before["misses"], (before, after)
    assert after["hits"] == before["hits"] + 35
    assert after["refreshes"] >= before["refreshes"] + 3
    # Never older than its lifetime: the new target within 1 s, and from then on.
    first_new = locations.index("https://example.com/after")
    assert first_new <= 10 and set(locations[first_new:]) == {"https://example.com/after"}


async def test_a_link_nobody_follows_is_refreshed_once_then_expires(
    settings,
) -> None:  # type: ignore[no-untyped-def]
    """Only entries used since they were read are refreshed: the entry a refresh puts is
    not kept alive by further refreshes unless a request asks for it."""
    from url_shortener.app import create_app

    app = create_app(settings.model_copy(update={"local_cache_ttl_seconds": 0.5}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="https://sho.rt") as c:
            code = (await make_link(c))["code"]
            assert (await c.get(f"/{code}")).status_code == 302  # miss, filled as used
            before = await local_cache_counts(c)
            await asyncio.sleep(1.6)  # past three lifetimes, nobody asking
            assert (await c.get(f"/{code}")).status_code == 302
            after = await local_cache_counts(c)
    assert after["refreshes"] == before["refreshes"] + 1
    assert after["misses"] == before["misses"] + 1


async def test_the_refresher_has_at_most_a_batch_of_lookups_in_flight(
    app: FastAPI, redis_url: str
) -> None:
    """However many entries fall due together, the refresher runs REFRESH_BATCH lookups at a
    time: a burst of refreshes must not become a burst of work in one event-loop turn."""
    cache: LinkCache = app.state.links.cache
    local = LocalCache(ttl=0.4, size=1000)  # a cache of its own, on the app's Redis and SQL
    refresher = LinkCache(cache.redis, ttl=60, negative_ttl=60, retry_after=1.0, local=local)
    codes = [f"refresh{i:03d}" for i in range(100)]
    for i, code in enumerate(codes):
        local.put(code, CachedLink(i, f"https://example.com/{i}", 302, None, False, None), epoch=0)
        assert local.get(code) is not None  # used
    in_flight = most = loads = 0

    async def slow_loader(code: str) -> CachedLink | None:
        # Not in Redis: every refresh loads from here (where the in-flight count is seen).
        nonlocal in_flight, most, loads
        in_flight += 1
        loads += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return CachedLink(0, "https://example.com/loaded", 302, None, False, None)

    task = asyncio.create_task(refresher.refresh_ahead(slow_loader))
    try:
        for _ in range(300):
            await asyncio.sleep(0.01)
            if loads == len(codes):
                break
        await asyncio.sleep(0.5)  # more than a lifetime: the refreshed entries were not used
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with aredis.Redis.from_url(redis_url) as r:
            await r.delete(*(link_key(c) for c in codes), *(version_key(c) for c in codes))
    assert loads == len(codes)  # each entry refreshed once (the refreshed ones are unused)
    assert most == REFRESH_BATCH
    assert local.refreshes == len(codes)


def test_local_cache_hands_out_each_used_entry_once_oldest_first() -> None:
    local = LocalCache(ttl=60, size=10)  # entries are due in their last `lead` (5 s)
    link = CachedLink(1, "https://example.com/", 302, None, False, None)
    local.put("a", link, epoch=0)
    local.put("b", link, epoch=0, used=False)  # a refresh's entry nobody asked for since
    local.put("c", link, epoch=0)
    local.put("a", link, epoch=0)  # put again: its first record is stale
    assert local.due(10) == []  # nothing expires within the lead yet
    local.lead = 120.0
    assert local.due(1) == ["c"]  # oldest record first ("a"'s first record is skipped)
    assert local.due(10) == ["a"]
    assert local.due(10) == []  # each handed out once
    assert local.refreshes == 2
