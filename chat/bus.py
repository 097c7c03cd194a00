"""Redis, the part every instance shares: pub/sub fan-out of room events, presence with
expiry, and receipt watermarks. Keys carry the `{room:<id>}` hash tag, so one room's keys
and channel sit on one Redis Cluster node.

Events travel as `{"o": <origin instance>, "f": <the frame clients get>}`; an instance skips
its own (it delivered them locally before publishing), so a room keeps working on one
instance while Redis is away, and the others catch up from SQL when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from common.redis import REDIS_DOWN, AnyRedis, load_script

log = structlog.get_logger("chat.bus")
LUA = Path(__file__).parent / "lua"

OnEvent = Callable[[int, dict[str, Any]], None]
OnReconnect = Callable[[], Awaitable[None]]


def channel(room_id: int) -> str:
    return f"chat:{{room:{room_id}}}"


def _room_of(channel_name: bytes) -> int:
    return int(channel_name.decode().rsplit(":", 1)[1].rstrip("}"))


class Bus:
    """Publish and receive room events; presence and receipts in Redis."""

    def __init__(self, redis: AnyRedis, listener: Redis, *, instance: str) -> None:
        self.redis = redis
        self.listener = listener  # its own connection pool: a pub/sub read blocks
        self.instance = instance
        self._presence = load_script(redis, LUA / "presence.lua")
        self._receipt = load_script(redis, LUA / "receipt.lua")
        self._rooms: set[int] = set()
        self._pubsub: Any = None
        self.connected = asyncio.Event()

    # -- pub/sub -----------------------------------------------------------------------
    async def publish(self, room_id: int, frame: dict[str, Any]) -> bool:
        """Send an event to the room's other instances; False when Redis is down."""
        data = json.dumps({"o": self.instance, "f": frame}, separators=(",", ":"))
        for attempt in (1, 2):  # a repeat is harmless: hubs drop a seq they have
            try:
                await self.redis.publish(channel(room_id), data)
                return True
            except REDIS_DOWN as exc:
                if attempt == 2:
                    log.warning("publish_failed", room=room_id, error=str(exc))
        return False

    async def subscribe(self, room_id: int) -> None:
        self._rooms.add(room_id)
        if self._pubsub is not None and self.connected.is_set():
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.subscribe(channel(room_id))

    async def unsubscribe(self, room_id: int) -> None:
        self._rooms.discard(room_id)
        if self._pubsub is not None and self.connected.is_set():
            with contextlib.suppress(*REDIS_DOWN):
                await self._pubsub.unsubscribe(channel(room_id))

    async def listen(self, on_event: OnEvent, on_reconnect: OnReconnect) -> None:
        """Receive events until cancelled; after a lost connection, resubscribe and call
        `on_reconnect` (events published meanwhile were missed: the rooms resync from SQL)."""
        delay = 0.05
        first = True
        while True:
            pubsub = self.listener.pubsub(ignore_subscribe_messages=True)
            try:
                # A placeholder channel, so the connection exists before any room does.
                await pubsub.subscribe(f"chat:instance:{self.instance}")
                if self._rooms:
                    await pubsub.subscribe(*[channel(r) for r in self._rooms])
                self._pubsub = pubsub
                self.connected.set()
                if not first:
                    log.info("pubsub_reconnected", rooms=len(self._rooms))
                    await on_reconnect()
                first, delay = False, 0.05
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    try:
                        event = json.loads(msg["data"])
                        if event.get("o") != self.instance:
                            on_event(_room_of(msg["channel"]), event["f"])
                    except (ValueError, KeyError, TypeError):
                        log.warning("bad_event", channel=msg.get("channel"))
            except REDIS_DOWN as exc:
                if self.connected.is_set():
                    log.warning("pubsub_lost", error=str(exc))
                self.connected.clear()
                self._pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    # -- presence ----------------------------------------------------------------------
    def _member(self, user: str) -> str:
        return f"{user}|{self.instance}"

    async def presence(self, room_id: int, op: str, user: str, ttl: float) -> tuple[int, list[str]]:
        """Run one presence operation; (expired entries dropped, users present)."""
        key = f"{{room:{room_id}}}:presence"
        reply = await self._presence(keys=[key], args=[op, self._member(user), int(ttl * 1000)])
        pruned = int(reply[0])
        users = sorted({m.decode().rsplit("|", 1)[0] for m in reply[1:]})
        return pruned, users

    async def refresh_presence(
        self, entries: list[tuple[int, str]], ttl: float
    ) -> dict[int, tuple[int, list[str]]]:
        """Refresh this instance's (room, user) entries in one pipeline; per room, what
        `presence` returns."""
        pipe: Any = self.redis.pipeline(transaction=False)
        for room_id, user in entries:
            key = f"{{room:{room_id}}}:presence"
            await self._presence(
                keys=[key], args=["add", self._member(user), int(ttl * 1000)], client=pipe
            )
        replies = await pipe.execute()
        out: dict[int, tuple[int, list[str]]] = {}
        for (room_id, _), reply in zip(entries, replies, strict=True):
            pruned = int(reply[0]) + out.get(room_id, (0, []))[0]
            out[room_id] = (pruned, sorted({m.decode().rsplit("|", 1)[0] for m in reply[1:]}))
        return out

    # -- receipts ----------------------------------------------------------------------
    async def receipt(self, room_id: int, user: str, kind: str, seq: int) -> tuple[int, int] | None:
        """Raise a watermark ("d" delivered, "r" read); (delivered, read) if it moved."""
        key = f"{{room:{room_id}}}:receipts"
        reply = await self._receipt(keys=[key], args=[user, kind, seq])
        return (int(reply[0]), int(reply[1])) if reply else None

    async def receipts(self, room_id: int) -> dict[str, dict[str, int]]:
        raw = await self.redis.hgetall(f"{{room:{room_id}}}:receipts")
        out: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else str(field)
            kind, user = name.split(":", 1)
            out.setdefault(user, {"delivered": 0, "read": 0})[
                "delivered" if kind == "d" else "read"
            ] = int(value)
        return out
