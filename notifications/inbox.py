"""The in-app inbox as the API serves it: pages, unread count, read/archive, and a live
stream (Server-Sent Events) fed by the Redis channel the in-app provider publishes on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.redis import AnyRedis
from notifications.errors import NotFound
from notifications.inapp import inbox_channel, item_json
from notifications.schemas import InboxItemRead, InboxPage
from notifications.service import decode_cursor
from notifications.store import InboxItem

Filter = Literal["unread", "all", "archived"]


class Inbox:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: AnyRedis,
        *,
        heartbeat: float = 15.0,
        lifetime: float = 300.0,
    ) -> None:
        self.sessions, self.redis = sessions, redis
        self.heartbeat, self.lifetime = heartbeat, lifetime

    async def page(self, user_id: str, which: Filter, cursor: str | None, limit: int) -> InboxPage:
        before = decode_cursor(cursor)
        query = select(InboxItem).where(InboxItem.user_id == user_id)
        if which == "archived":
            query = query.where(InboxItem.archived_at.is_not(None))
        else:
            query = query.where(InboxItem.archived_at.is_(None))
        if which == "unread":
            query = query.where(InboxItem.read_at.is_(None))
        if before is not None:
            query = query.where(InboxItem.id < before)
        async with self.sessions() as session:
            rows = list(await session.scalars(query.order_by(InboxItem.id.desc()).limit(limit + 1)))
            unread = await self._unread(session, user_id)
        items = [InboxItemRead(**item_json(r)) for r in rows[:limit]]  # type: ignore[arg-type]
        return InboxPage(
            items=items,
            unread=unread,
            next_cursor=str(rows[limit - 1].id) if len(rows) > limit else None,
        )

    async def _unread(self, session: AsyncSession, user_id: str) -> int:
        count = await session.scalar(
            select(func.count())
            .select_from(InboxItem)
            .where(
                InboxItem.user_id == user_id,
                InboxItem.read_at.is_(None),
                InboxItem.archived_at.is_(None),
            )
        )
        return int(count or 0)

    async def unread(self, user_id: str) -> int:
        async with self.sessions() as session:
            return await self._unread(session, user_id)

    async def mark(
        self, user_id: str, item_id: int, action: Literal["read", "archive"]
    ) -> InboxItemRead:
        column = "read_at" if action == "read" else "archived_at"
        async with self.sessions() as session, session.begin():
            item = await session.get(InboxItem, item_id)
            if item is None or item.user_id != user_id:
                raise NotFound(f"no inbox item {item_id} for {user_id}")
            if getattr(item, column) is None:
                setattr(item, column, time.time())
            if action == "archive" and item.read_at is None:
                item.read_at = item.archived_at
        return InboxItemRead(**item_json(item))  # type: ignore[arg-type]

    async def read_all(self, user_id: str) -> int:
        async with self.sessions() as session, session.begin():
            done = await session.execute(
                update(InboxItem)
                .where(InboxItem.user_id == user_id, InboxItem.read_at.is_(None))
                .values(read_at=time.time())
            )
        return int(done.rowcount)  # type: ignore[attr-defined]

    async def stream(self, user_id: str, after: int | None) -> AsyncIterator[str]:
        """SSE frames: items newer than `after` first (a reconnect catches up), then each new
        item as it is delivered, and a comment line every `heartbeat` s to keep proxies open.
        The stream ends after `lifetime` s; the client reconnects with Last-Event-ID (within
        the `retry` it was given) and loses nothing, and no connection lives forever."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(inbox_channel(user_id))
        ends = time.monotonic() + self.lifetime
        try:
            yield ": connected\nretry: 1000\n\n"
            seen = after or 0
            if after is not None:
                async with self.sessions() as session:
                    rows = await session.scalars(
                        select(InboxItem)
                        .where(InboxItem.user_id == user_id, InboxItem.id > after)
                        .order_by(InboxItem.id)
                    )
                    for row in rows:
                        seen = max(seen, row.id)
                        yield _frame(item_json(row))
            floor = seen  # only the catch-up can repeat a live item
            last = time.monotonic()
            while time.monotonic() < ends:
                wait = min(1.0, max(ends - time.monotonic(), 0.0))
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is not None and message["type"] == "message":
                    item = json.loads(message["data"])
                    if int(item["id"]) > floor:
                        yield _frame(item)
                    last = time.monotonic()
                elif time.monotonic() - last >= self.heartbeat:
                    last = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


def _frame(item: dict[str, object]) -> str:
    return f"id: {item['id']}\nevent: notification\ndata: {json.dumps(item)}\n\n"
