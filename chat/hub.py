"""This instance's side of every room: which local connections are in it, the room's events
put back in `seq` order, presence and delivered receipts.

Messages reach a hub from two places: sends made on this instance (directly) and sends on
other instances (Redis pub/sub). Either can arrive out of order (two instances commit seq 5
and 6, the second publishes first) or not at all (pub/sub drops what it cannot deliver while
a connection is down). A hub holds a message that comes early, and when the missing seq has
not arrived within `gap_wait`, reads it from SQL, where every acknowledged message already
is. So each connection sees every message of its rooms once and in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any, Protocol

import structlog

from chat.bus import Bus
from chat.metrics import ChatMetrics
from chat.protocol import dumps, message_frame
from chat.store import ChatStore
from common.redis import REDIS_DOWN

log = structlog.get_logger("chat.hub")


class Listener(Protocol):
    """A connection as the hub sees it."""

    user: str

    def push(self, room_id: int, seq: int, text: str) -> None: ...

    def push_event(self, text: str) -> None: ...

    def joined_at(self, room_id: int, seq: int) -> None: ...


class RoomHub:
    __slots__ = ("conns", "early", "filling", "held", "last_seq", "ready", "room_id")

    def __init__(self, room_id: int) -> None:
        self.room_id = room_id
        self.last_seq = 0
        self.ready = asyncio.Event()
        self.early: list[tuple[int, str]] = []  # arrived before last_seq was known
        self.held: dict[int, str] = {}  # arrived ahead of a missing seq
        self.filling = False
        self.conns: set[Listener] = set()


class Hub:
    def __init__(
        self,
        *,
        bus: Bus,
        store: ChatStore,
        metrics: ChatMetrics,
        gap_wait: float,
        presence_ttl: float,
        delivery_receipts: bool = True,
        presence_debounce: float = 0.05,
    ) -> None:
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.gap_wait = gap_wait
        self.presence_ttl = presence_ttl
        self.delivery_receipts = delivery_receipts
        self.presence_debounce = presence_debounce
        self._announcing: set[int] = set()
        self.rooms: dict[int, RoomHub] = {}
        self.local_users: Counter[tuple[int, str]] = Counter()
        self._delivered: dict[tuple[int, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- membership of local connections -----------------------------------------------
    async def attach(self, conn: Listener, room_id: int) -> int:
        """Put a connection in a room; the room's latest seq, from which it gets live ones."""
        hub = self.rooms.get(room_id)
        if hub is None:
            hub = self.rooms[room_id] = RoomHub(room_id)
            try:
                # Subscribe before reading the latest seq, so nothing falls in between.
                await self.bus.subscribe(room_id)
                hub.last_seq = (await self.store.room(room_id)).last_seq
            except BaseException:
                del self.rooms[room_id]
                hub.ready.set()
                raise
            hub.ready.set()
            early, hub.early = hub.early, []
            for seq, text in sorted(early):
                self._offer(hub, seq, text)
        else:
            await hub.ready.wait()
            if self.rooms.get(room_id) is not hub:  # its creation failed meanwhile
                return await self.attach(conn, room_id)
        conn.joined_at(room_id, hub.last_seq)
        hub.conns.add(conn)
        self.metrics.rooms.set(len(self.rooms))
        key = (room_id, conn.user)
        self.local_users[key] += 1
        if self.local_users[key] == 1:
            await self._presence_changed(room_id, "add", conn.user)
        return hub.last_seq

    async def detach(self, conn: Listener, room_id: int) -> None:
        hub = self.rooms.get(room_id)
        if hub is None or conn not in hub.conns:
            return
        hub.conns.discard(conn)
        if not hub.conns:
            del self.rooms[room_id]
            self.metrics.rooms.set(len(self.rooms))
            await self.bus.unsubscribe(room_id)
        key = (room_id, conn.user)
        self.local_users[key] -= 1
        if self.local_users[key] <= 0:
            del self.local_users[key]
            await self._presence_changed(room_id, "remove", conn.user)

    # -- events ------------------------------------------------------------------------
    def on_event(self, room_id: int, frame: dict[str, Any]) -> None:
        """An event from another instance (through Redis)."""
        hub = self.rooms.get(room_id)
        if hub is None:
            return
        if frame.get("type") == "message":
            self._offer(hub, int(frame["seq"]), dumps(frame))
        else:
            self._broadcast(hub, dumps(frame))

    async def publish_message(self, room_id: int, seq: int, frame: dict[str, Any]) -> None:
        """A message stored on this instance: to local members now, then to the others."""
        hub = self.rooms.get(room_id)
        if hub is not None:
            self._offer(hub, seq, dumps(frame))
        await self.bus.publish(room_id, frame)

    async def publish_event(self, room_id: int, frame: dict[str, Any]) -> None:
        hub = self.rooms.get(room_id)
        if hub is not None:
            self._broadcast(hub, dumps(frame))
        await self.bus.publish(room_id, frame)

    def _broadcast(self, hub: RoomHub, text: str) -> None:
        for conn in list(hub.conns):
            conn.push_event(text)

    def _offer(self, hub: RoomHub, seq: int, text: str) -> None:
        if not hub.ready.is_set():
            hub.early.append((seq, text))
            return
        if seq <= hub.last_seq:
            return  # had it already (our own send coming back, or a gap filled from SQL)
        if seq > hub.last_seq + 1:
            hub.held[seq] = text
            if not hub.filling:
                self._spawn(self._fill_gap(hub))
            return
        self._deliver(hub, seq, text)
        while hub.last_seq + 1 in hub.held:
            nxt = hub.last_seq + 1
            self._deliver(hub, nxt, hub.held.pop(nxt))

    def _deliver(self, hub: RoomHub, seq: int, text: str) -> None:
        hub.last_seq = seq
        self.metrics.fanout.inc(len(hub.conns))
        for conn in list(hub.conns):
            conn.push(hub.room_id, seq, text)

    async def _fill_gap(self, hub: RoomHub) -> None:
        hub.filling = True
        try:
            await asyncio.sleep(self.gap_wait)
            while hub.held and min(hub.held) > hub.last_seq + 1 and self.rooms.get(hub.room_id):
                await self.catch_up(hub, until=min(hub.held))
        except Exception as exc:  # SQL unavailable: the next event tries again
            log.warning("gap_fill_failed", room=hub.room_id, error=str(exc))
        finally:
            hub.filling = False

    async def catch_up(self, hub: RoomHub, until: int | None = None) -> None:
        """Deliver what SQL has after the hub's last seq (up to `until`, exclusive)."""
        while True:
            rows = await self.store.messages(
                hub.room_id, after_seq=hub.last_seq, before_seq=until, limit=500
            )
            if not rows:
                return
            self.metrics.gap_fills.inc(len(rows))
            for msg in rows:
                self._offer(hub, msg.seq, dumps(message_frame(msg)))
            if len(rows) < 500:
                return

    async def reconcile(self) -> None:
        """Catch up rooms that SQL says are ahead: a publish that failed (Redis timed out)
        is otherwise only noticed when the room's next message arrives."""
        if not self.rooms:
            return
        latest = await self.store.last_seqs(list(self.rooms))
        for room_id, seq in latest.items():
            hub = self.rooms.get(room_id)
            if hub is not None and hub.ready.is_set() and seq > hub.last_seq and not hub.filling:
                await self.catch_up(hub)

    async def resync(self) -> None:
        """After pub/sub was lost: fetch what was missed, and tell Redis who is here."""
        for hub in list(self.rooms.values()):
            try:
                await self.catch_up(hub)
            except Exception as exc:
                log.warning("resync_failed", room=hub.room_id, error=str(exc))
        await self.refresh_presence()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- presence ----------------------------------------------------------------------
    async def _presence_changed(self, room_id: int, op: str, user: str) -> None:
        try:
            await self.bus.presence(room_id, op, user, self.presence_ttl)
        except REDIS_DOWN as exc:
            log.warning("presence_unavailable", room=room_id, error=str(exc))
            return
        # Announced once per debounce window: a thousand members joining a room make a few
        # presence frames to each, not a thousand.
        if room_id not in self._announcing:
            self._announcing.add(room_id)
            self._spawn(self._announce(room_id))

    async def _announce(self, room_id: int) -> None:
        try:
            await asyncio.sleep(self.presence_debounce)
        finally:
            self._announcing.discard(room_id)
        try:
            users = await self.present(room_id)
        except REDIS_DOWN:
            return
        await self.publish_event(room_id, {"type": "presence", "room": room_id, "users": users})

    async def present(self, room_id: int) -> list[str]:
        _, users = await self.bus.presence(room_id, "list", "", self.presence_ttl)
        return users

    async def refresh_presence(self) -> None:
        """Refresh this instance's entries; announce rooms where some expired meanwhile."""
        entries = list(self.local_users)
        if not entries:
            return
        try:
            result = await self.bus.refresh_presence(entries, self.presence_ttl)
        except REDIS_DOWN as exc:
            log.warning("presence_refresh_failed", error=str(exc))
            return
        for room_id, (pruned, users) in result.items():
            if pruned:
                frame = {"type": "presence", "room": room_id, "users": users}
                await self.publish_event(room_id, frame)

    async def prune_presence(self) -> None:
        """Rooms with local connections: drop entries that expired (an instance died)."""
        for room_id in list(self.rooms):
            try:
                pruned, users = await self.bus.presence(room_id, "list", "", self.presence_ttl)
            except REDIS_DOWN:
                return
            if pruned:
                frame = {"type": "presence", "room": room_id, "users": users}
                await self.publish_event(room_id, frame)

    # -- receipts ----------------------------------------------------------------------
    def delivered(self, room_id: int, user: str, seq: int) -> None:
        """A message frame reached a connection's socket (announced in batches)."""
        if not self.delivery_receipts:
            return
        key = (room_id, user)
        if seq > self._delivered.get(key, 0):
            self._delivered[key] = seq

    async def flush_receipts(self) -> None:
        pending, self._delivered = self._delivered, {}
        for (room_id, user), seq in pending.items():
            try:
                await self.receipt(room_id, user, "d", seq)
            except REDIS_DOWN:
                return

    async def receipt(self, room_id: int, user: str, kind: str, seq: int) -> None:
        moved = await self.bus.receipt(room_id, user, kind, seq)
        if moved is not None:
            delivered, read = moved
            frame = {
                "type": "receipt",
                "room": room_id,
                "user": user,
                "delivered": delivered,
                "read": read,
            }
            await self.publish_event(room_id, frame)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
