"""Visits from the redirect to SQL: hostile headers, shutdown during a flush, a full buffer,
the stream and the writer (exactly once, redelivery, a dead writer's entries)."""

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from tests.url_shortener.conftest import ADMIN, in_process_writer, make_link, settle_visits
from url_shortener.metrics import VisitMetrics
from url_shortener.visits import RawVisit, Visitor, VisitRecorder


async def test_a_malformed_referer_does_not_hold_back_other_visits(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    code = (await make_link(client))["code"]
    await client.get(f"/{code}", headers={"referer": "http://["})
    for _ in range(5):
        await client.get(f"/{code}", headers={"referer": "https://ok.example/"})
    assert await settle_visits(app) == 6
    stats = (await client.get(f"/api/links/{code}/stats", headers=ADMIN)).json()
    assert stats["total"] == 6
    assert {"referrer": "(direct)", "visits": 1} in stats["top_referrers"]


async def test_huge_user_agents_are_cut_and_cheap(client: httpx.AsyncClient, app: FastAPI) -> None:
    code = (await make_link(client))["code"]
    hostile = "Version/" + "1." * 30_000  # quadratic for a naive Safari regex
    for i in range(8):
        await client.get(f"/{code}", headers={"user-agent": hostile + str(i)})
    started = time.perf_counter()
    await settle_visits(app)
    assert time.perf_counter() - started < 2.0
    async with app.state.engine.connect() as conn:
        longest = (await conn.execute(text("SELECT max(length(user_agent)) FROM visits"))).scalar()
    assert longest == 512


def _recorder(app: FastAPI, **kwargs: object) -> VisitRecorder:
    settings = app.state.settings
    return VisitRecorder(
        app.state.links.recorder.redis,
        app.state.links.sessions,
        stream=settings.visit_stream,
        stream_maxlen=1000,
        salt=b"s",
        flush_interval=kwargs.pop("flush_interval", 60.0),  # type: ignore[arg-type]
        batch_size=kwargs.pop("batch_size", 100),  # type: ignore[arg-type]
        buffer_limit=kwargs.pop("buffer_limit", 100_000),  # type: ignore[arg-type]
        metrics=VisitMetrics(CollectorRegistry()),
    )


async def visit_rows(app: FastAPI) -> int:
    async with app.state.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM visits"))).scalar_one())


async def test_stopping_during_a_flush_finishes_it(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Shutdown while a batch is on its way: the batch is finished, not cancelled. The ship
    is held on an event, so the stop lands mid-flush every time (no sleep to get lucky)."""
    link = await make_link(client)
    link_id = (await app.state.links.get(link["code"])).id
    recorder = _recorder(app, batch_size=200)
    shipping, release = asyncio.Event(), asyncio.Event()
    real_ship = recorder._ship

    async def held_ship(batch: list[RawVisit]) -> None:
        shipping.set()
        await release.wait()
        await real_ship(batch)

    recorder._ship = held_ship  # type: ignore[method-assign]
    recorder.start()
    visitor = Visitor(peer="203.0.113.9", headers=[(b"user-agent", b"test")])
    for _ in range(3000):
        recorder.record(link_id, visitor)
    await asyncio.wait_for(shipping.wait(), 5)  # the batch threshold woke it: mid-flush
    stopping = asyncio.create_task(recorder.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # stop waits for the batch in hand...
    release.set()
    await asyncio.wait_for(stopping, 10)
    assert not recorder.buffer  # ...and ships the rest
    await in_process_writer(app).drain()
    assert await visit_rows(app) == 3000


async def test_a_full_buffer_drops_the_oldest_and_counts_them(app: FastAPI) -> None:
    recorder = _recorder(app, buffer_limit=10)
    visitor = Visitor(peer=None, headers=[])
    batch: list[RawVisit] = [(i, 0.0, visitor, False) for i in range(10)]
    for i in range(10, 15):  # newer visits arrived while the batch was out being written
        recorder.record(i, visitor)
    recorder._requeue(batch)  # the write failed: the batch goes back in front
    assert [v[0] for v in recorder.buffer] == list(range(5, 15))
    assert recorder.metrics.dropped._value.get() == 5


@pytest.mark.parametrize("referer", ["http://[", "http://[foo]/", "::::", "https://ok/"])
def test_referrer_host_never_raises(referer: str) -> None:
    from url_shortener.visits import referrer_host

    assert referrer_host(referer) in (None, "ok")


async def test_a_batch_round_trips_odd_values_exactly(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A batch travels as one JSON parameter unpacked by the database: quotes, backslashes,
    non-ASCII, NULLs, booleans, microseconds and visits of a deleted link all come out right."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from common.db import transaction
    from url_shortener.store import Link, Visit, VisitRecord, write_visits

    kept = (await app.state.links.get((await make_link(client))["code"])).id
    gone_code = (await make_link(client))["code"]
    gone = (await app.state.links.get(gone_code)).id
    await client.delete(f"/api/links/{gone_code}", headers=ADMIN)
    ts = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    odd = "Mozilla/5.0 \"quoted\" \\ back\\slash ÿ é \u2603 'single'"
    records = [
        VisitRecord(kept, ts, "ex.com", odd, "Firefox", False, "a" * 16),
        VisitRecord(kept, ts, None, None, "Bot", True, "b" * 16, counted=True),
        VisitRecord(gone, ts, "x", "y", "Other", False, "c" * 16),
    ]
    async with transaction(app.state.links.sessions) as session:
        assert await write_visits(session, records) == 2
    async with app.state.links.sessions() as session:
        rows = (
            await session.scalars(
                select(Visit).where(Visit.link_id == kept).order_by(Visit.visitor)
            )
        ).all()
        link = await session.get(Link, kept)
    got = [(v.ts, v.referrer_host, v.user_agent, v.browser, v.is_bot, v.visitor) for v in rows]
    assert got == [
        (ts, "ex.com", odd, "Firefox", False, "a" * 16),
        (ts, None, None, "Bot", True, "b" * 16),
    ]
    assert link is not None and link.visits == 1  # the counted one was in links.visits already


def test_several_forwarded_for_lines_are_read_as_one_list() -> None:
    """A trusted proxy that adds its own X-Forwarded-For line after the client's: the client
    is the address the proxy saw, never the one the client wrote itself."""
    from common.net import parse_networks
    from url_shortener.visits import encode, make_record

    def visitor_hash(*lines: bytes) -> str:
        visitor = Visitor(peer="10.0.0.1", headers=[(b"x-forwarded-for", v) for v in lines])
        [item] = json.loads(encode([(1, 0.0, visitor, False)]))
        record = make_record(item, salt=b"s", trusted_proxies=parse_networks(["10.0.0.0/8"]))
        return record.visitor

    two_lines = visitor_hash(b"6.6.6.6", b"198.51.100.4")
    assert two_lines == visitor_hash(b"6.6.6.6, 198.51.100.4")
    assert two_lines == visitor_hash(b"198.51.100.4")
    assert two_lines != visitor_hash(b"6.6.6.6")
    # A client's huge line in front does not push the proxy's hop out of what is read.
    assert two_lines == visitor_hash(b"6.6.6.6, " * 400, b"198.51.100.4")


async def test_a_batch_delivered_again_is_written_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A writer that committed but died before its acknowledgement: the entry is delivered
    again (to whoever claims it), and its batch id makes the second write a no-op."""
    from url_shortener.visits import write_batches

    code = (await make_link(client))["code"]
    for _ in range(7):
        await client.get(f"/{code}")
    await app.state.links.recorder.flush()
    dying = in_process_writer(app, consumer="dying")
    await dying.ensure_group()
    entries = await dying._read(block=None)
    assert entries
    batches = {f[b"b"].decode(): f[b"v"].decode() for _, f in entries if f}
    done = await write_batches(
        app.state.links.sessions, batches, salt=dying.salt, trusted_proxies=()
    )
    assert done.visits == 7  # committed... and the writer dies here, before XACK
    heir = in_process_writer(app, consumer="heir", claim_idle=0.05)
    await asyncio.sleep(0.1)
    await heir.drain()
    assert heir.metrics.claimed._value.get() == len(entries)
    assert heir.metrics.duplicates._value.get() == len(batches)
    assert await visit_rows(app) == 7
    assert (await app.state.links.get(code)).visits == 7
    pending = await dying.redis.xpending(app.state.settings.visit_stream, "writers")
    assert pending["pending"] == 0


async def test_a_dead_writers_entries_are_claimed_after_the_idle_time(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    code = (await make_link(client))["code"]
    for _ in range(5):
        await client.get(f"/{code}")
    await app.state.links.recorder.flush()
    dead = in_process_writer(app, consumer="dead")
    await dead.ensure_group()
    assert await dead._read(block=None)  # read, never written nor acknowledged: killed
    patient = in_process_writer(app, consumer="patient", claim_idle=60)
    await patient.drain()
    assert await visit_rows(app) == 0  # not idle long enough: presumed still working
    quick = in_process_writer(app, consumer="quick", claim_idle=0.05)
    await asyncio.sleep(0.1)
    await quick.drain()
    assert await visit_rows(app) == 5


async def test_visits_go_to_sql_directly_while_redis_is_away(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """No stream to ship to: the server writes the batch itself (same exactly-once path)."""
    code = (await make_link(client))["code"]
    for _ in range(4):
        await client.get(f"/{code}")
    recorder = app.state.links.recorder
    recorder.redis_usable = lambda: False
    assert await recorder.flush() == 4
    assert await visit_rows(app) == 4
    assert await recorder.redis.xlen(app.state.settings.visit_stream) == 0
