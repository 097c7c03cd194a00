"""SQL persistence: the tables and the queries the service needs, nothing else."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, raiseload, relationship

from common.db import transaction
from url_shortener.errors import AliasTaken

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored as UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Link(Base):
    __tablename__ = "links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_visits: Mapped[int | None] = mapped_column(Integer)
    redirect_status: Mapped[int] = mapped_column(Integer, default=302)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    visits: Mapped[int] = mapped_column(BigInteger, default=0)
    owner: Mapped[str | None] = mapped_column(String(64))
    tag_rows: Mapped[list[LinkTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", passive_deletes=True
    )

    @property
    def tags(self) -> list[str]:
        return sorted(t.tag for t in self.tag_rows)


class LinkTag(Base):
    __tablename__ = "link_tags"

    link_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("links.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)


class Visit(Base):
    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_link_ts", "link_id", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    link_id: Mapped[int] = mapped_column(BigId, ForeignKey("links.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    referrer_host: Mapped[str | None] = mapped_column(String(255))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    browser: Mapped[str] = mapped_column(String(32))
    is_bot: Mapped[bool] = mapped_column(Boolean)
    visitor: Mapped[str] = mapped_column(String(16))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Updated at most once a minute per key and process (keys.py): "roughly when".
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class VisitBatch(Base):
    """One row per batch of visits written: a batch delivered twice (a writer killed between
    its commit and its acknowledgement) is recognised by its id and written once."""

    __tablename__ = "visit_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class IdBlock(Base):
    """The ticket server: hands out ranges of counter values to instances."""

    __tablename__ = "id_blocks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_value: Mapped[int] = mapped_column(BigInteger)


Sessions = async_sessionmaker[AsyncSession]


async def add_links(sessions: Sessions, links: Sequence[Link]) -> None:
    """Insert links in one transaction. Raises AliasTaken (nothing inserted) when a code
    is taken already: the unique key decides, so concurrent creators cannot both win."""
    try:
        async with transaction(sessions) as session:
            session.add_all(links)
    except IntegrityError as exc:
        codes = ", ".join(f"'{link.code}'" for link in links[:3])
        raise AliasTaken(f"The alias {codes} is already taken.") from exc


# ---- counter blocks -----------------------------------------------------------------------


async def ensure_counter(session: AsyncSession, name: str, start: int = 0) -> None:
    """Create the counter row once; concurrent creators lose the race harmlessly."""
    if await session.get(IdBlock, name) is None:
        try:
            async with session.begin_nested():
                session.add(IdBlock(name=name, next_value=start))
        except IntegrityError:
            pass


async def reserve_block(session: AsyncSession, name: str, size: int) -> range:
    """Atomically take the next `size` counter values (one UPDATE ... RETURNING)."""
    end = await session.scalar(
        update(IdBlock)
        .where(IdBlock.name == name)
        .values(next_value=IdBlock.next_value + size)
        .returning(IdBlock.next_value)
    )
    if end is None:
        raise RuntimeError(f"counter {name!r} missing; ensure_counter was not called")
    return range(end - size, end)


# ---- links ---------------------------------------------------------------------------------


async def link_by_code(session: AsyncSession, code: str) -> Link | None:
    return await session.scalar(select(Link).where(Link.code == code))


async def link_for_redirect(session: AsyncSession, code: str) -> Link | None:
    """The link without its tags: the redirect path needs one query, not two."""
    return await session.scalar(
        select(Link).where(Link.code == code).options(raiseload(Link.tag_rows))
    )


async def existing_codes(session: AsyncSession, codes: Sequence[str]) -> set[str]:
    if not codes:
        return set()
    return set(await session.scalars(select(Link.code).where(Link.code.in_(codes))))


async def delete_link(session: AsyncSession, link: Link) -> None:
    await session.execute(delete(Visit).where(Visit.link_id == link.id))
    await session.delete(link)


def encode_cursor(link_id: int) -> str:
    return base64.urlsafe_b64encode(str(link_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id inside a cursor; ValueError for anything this API did not hand out."""
    padded = cursor + "=" * (-len(cursor) % 4)
    value = int(base64.urlsafe_b64decode(padded.encode()).decode())
    if not 0 < value < 2**63:
        raise ValueError("cursor out of range")
    return value


async def list_links(
    session: AsyncSession, *, owner: str | None, tag: str | None, before_id: int | None, limit: int
) -> list[Link]:
    """Newest first; keyset pagination on the id (stable under concurrent inserts)."""
    query = select(Link).order_by(Link.id.desc()).limit(limit)
    if owner is not None:
        query = query.where(Link.owner == owner)
    if tag:
        query = query.join(LinkTag).where(LinkTag.tag == tag)
    if before_id is not None:
        query = query.where(Link.id < before_id)
    return list(await session.scalars(query))


async def claim_visit(session: AsyncSession, link_id: int) -> bool:
    """Take one visit of a max_visits link: exact, durable once committed, whatever happens to
    Redis or to the instance afterwards (the one place a visit limit is decided)."""
    result = await session.execute(
        update(Link)
        .where(Link.id == link_id)
        .where((Link.max_visits.is_(None)) | (Link.visits < Link.max_visits))
        .values(visits=Link.visits + 1)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def visits_left(session: AsyncSession, link_id: int) -> int:
    """How many visits a max_visits link has left (0 for a deleted link)."""
    row = (
        await session.execute(select(Link.max_visits, Link.visits).where(Link.id == link_id))
    ).first()
    if row is None:
        return 0
    return 1 if row.max_visits is None else max(row.max_visits - row.visits, 0)


# ---- visits --------------------------------------------------------------------------------


async def new_batches(session: AsyncSession, batch_ids: Sequence[str]) -> set[str]:
    """Mark batches as written; returns those not written before (a redelivered batch is
    not). Concurrent writers of one batch: the unique key lets exactly one of them in."""
    if not batch_ids:
        return set()
    conn = await session.connection()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    now = utcnow()
    stmt = (
        insert(VisitBatch)
        .values([{"id": b, "written_at": now} for b in dict.fromkeys(batch_ids)])
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(VisitBatch.id)
    )
    return set((await session.execute(stmt)).scalars())


async def forget_batches(session: AsyncSession, before: datetime) -> None:
    """Drop batch ids older than any redelivery can be (they are only needed for that)."""
    await session.execute(delete(VisitBatch).where(VisitBatch.written_at < before))


class VisitRecord(NamedTuple):
    """A visit as stored (a named tuple: one is built per redirect, so it must be cheap)."""

    link_id: int
    ts: datetime
    referrer_host: str | None
    user_agent: str | None
    browser: str
    is_bot: bool
    visitor: str
    counted: bool = False  # already added to links.visits (the SQL claim path)


# The hottest write of the service (one row per redirect), so a batch goes to the database
# as ONE JSON parameter that the database itself unpacks (json_each / json_array_elements).
# A driver-level executemany binds row by row, and with SQLite each row re-takes the GIL
# from the thread that answers redirects: at a few thousand visits a second that hand-off
# cost the redirect path ~15% of its throughput. One statement takes the GIL once.
# (SQLite: 3.38+ has JSON built in; UPDATE ... FROM needs 3.33+.)
_INSERT_VISITS = {
    "sqlite": """
        INSERT INTO visits (link_id, ts, referrer_host, user_agent, browser, is_bot, visitor)
        SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'),
               json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'),
               json_extract(j.value, '$[4]'), json_extract(j.value, '$[5]'),
               json_extract(j.value, '$[6]')
        FROM json_each(?) AS j
        JOIN links ON links.id = json_extract(j.value, '$[0]')""",
    "postgresql": """
        INSERT INTO visits (link_id, ts, referrer_host, user_agent, browser, is_bot, visitor)
        SELECT (e->>0)::bigint, (e->>1)::timestamptz, e->>2, e->>3, e->>4, (e->>5)::boolean,
               e->>6
        FROM json_array_elements(%s::json) AS e
        JOIN links ON links.id = (e->>0)::bigint""",
}
_COUNT_VISITS = {
    "sqlite": """
        UPDATE links SET visits = links.visits + j.n
        FROM (SELECT json_extract(value, '$[0]') AS lid, json_extract(value, '$[1]') AS n
              FROM json_each(?)) AS j
        WHERE links.id = j.lid""",
    # Rows locked in id order first: two instances flushing overlapping links never deadlock.
    "postgresql": """
        WITH j AS (SELECT (e->>0)::bigint AS lid, (e->>1)::bigint AS n
                   FROM json_array_elements(%s::json) AS e),
             locked AS (SELECT links.id FROM links JOIN j ON links.id = j.lid
                        ORDER BY links.id FOR UPDATE OF links)
        UPDATE links SET visits = links.visits + j.n
        FROM j JOIN locked ON locked.id = j.lid
        WHERE links.id = j.lid""",
}


def _sqlite_text(ts: datetime) -> str:
    """`2026-01-02 03:04:05.678901`: naive UTC text, what SQLAlchemy's DateTime stores."""
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(" ", "microseconds")[:26]


async def check_database(engine: AsyncEngine) -> None:
    """Refuse to start on a SQLite too old for the batch statements above, with a message
    that says so (rather than failing on the first flush of visits)."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        version = (await conn.exec_driver_sql("SELECT sqlite_version()")).scalar_one()
        try:
            await conn.exec_driver_sql("SELECT json_extract('[1]', '$[0]')")
        except DBAPIError:  # "no such function: json_extract"
            json_ok = False
        else:
            json_ok = True
    if tuple(int(p) for p in str(version).split(".")[:2]) < (3, 33) or not json_ok:
        raise RuntimeError(
            f"SQLite {version} is too old (or built without JSON): the URL shortener needs "
            "3.33+ with the JSON functions (built in since 3.38). Use a newer Python build, "
            "or PostgreSQL (URL_SHORTENER_DATABASE_URL)."
        )


async def write_visits(session: AsyncSession, records: Sequence[VisitRecord]) -> int:
    """Insert a batch and bump each link's counter; visits of deleted links are dropped.
    Returns how many visits were written."""
    if not records:
        return 0
    conn = await session.connection()
    dialect = conn.dialect.name
    if dialect not in _INSERT_VISITS:
        raise NotImplementedError(f"visits are written for SQLite and PostgreSQL, not {dialect}")
    sqlite = dialect == "sqlite"
    rows = [
        (
            r.link_id,
            # SQLite: what SQLAlchemy's DateTime stores there, naive UTC text.
            _sqlite_text(r.ts) if sqlite else r.ts.isoformat(),
            r.referrer_host,
            r.user_agent,
            r.browser,
            r.is_bot,
            r.visitor,
        )
        for r in records
    ]
    result = await conn.exec_driver_sql(_INSERT_VISITS[dialect], (json.dumps(rows),))
    written = result.rowcount
    per_link: dict[int, int] = {}
    for r in records:
        if not r.counted:
            per_link[r.link_id] = per_link.get(r.link_id, 0) + 1
    if per_link and written:
        await conn.exec_driver_sql(_COUNT_VISITS[dialect], (json.dumps(list(per_link.items())),))
    return written


async def visit_stats(session: AsyncSession, link_id: int, top: int = 10) -> dict[str, Any]:
    """Aggregates for the stats endpoint, computed in SQL."""
    mine = Visit.link_id == link_id
    total, unique = (
        await session.execute(
            select(func.count(), func.count(Visit.visitor.distinct())).where(mine)
        )
    ).one()
    day = func.date(Visit.ts)
    per_day = await session.execute(
        select(day.label("day"), func.count()).where(mine).group_by(day).order_by(day)
    )
    referrers = await session.execute(
        select(Visit.referrer_host, func.count().label("n"))
        .where(mine)
        .group_by(Visit.referrer_host)
        .order_by(func.count().desc(), Visit.referrer_host)
        .limit(top)
    )
    browsers = await session.execute(
        select(Visit.browser, func.count().label("n"))
        .where(mine)
        .group_by(Visit.browser)
        .order_by(func.count().desc(), Visit.browser)
    )
    bots = dict(
        (bool(b), n)
        for b, n in await session.execute(
            select(Visit.is_bot, func.count()).where(mine).group_by(Visit.is_bot)
        )
    )
    return {
        "total": total,
        "unique_visitors": unique,
        "per_day": [{"day": str(d), "visits": n} for d, n in per_day],
        "top_referrers": [{"referrer": r or "(direct)", "visits": n} for r, n in referrers],
        "browsers": [{"browser": b, "visits": n} for b, n in browsers],
        "bots": bots.get(True, 0),
        "humans": bots.get(False, 0),
    }


async def iter_visits(session: AsyncSession, link_id: int, chunk: int = 1000) -> Any:
    """All visits of a link, oldest first, streamed in chunks."""
    result = await session.stream(
        select(Visit)
        .where(Visit.link_id == link_id)
        .order_by(Visit.id)
        .execution_options(yield_per=chunk)
    )
    async for visit in result.scalars():
        yield visit


# ---- API keys ------------------------------------------------------------------------------


async def revoke_key(session: AsyncSession, key_id: int) -> bool:
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def active_keys(session: AsyncSession) -> list[ApiKey]:
    """Keys that work, oldest first."""
    return list(
        await session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.id))
    )


async def touch_key(session: AsyncSession, key_id: int) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


async def key_by_hash(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return await session.scalar(
        select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
