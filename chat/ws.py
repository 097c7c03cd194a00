"""`/ws`: one connection, the broadcaster shape. A receiver task reads and handles client
frames, a sender task drains a bounded queue to the socket, an expiry task closes the
connection when its token runs out; all three in one task group, so when one ends (the
client left, the queue overflowed, the token expired) the others are cancelled with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import anyio
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from chat.errors import Forbidden, InvalidRequest, MessageNotFound, RoomNotFound, Unauthorized
from chat.hub import Hub
from chat.metrics import ChatMetrics
from chat.protocol import (
    BadFrame,
    ClientFrame,
    Delete,
    Edit,
    ErrorCode,
    Join,
    Leave,
    Ping,
    Read,
    Send,
    Sync,
    Typing,
    dumps,
    error_frame,
    message_frame,
    parse,
)
from chat.service import AccountService, Caller, ChatService
from chat.settings import ChatSettings
from common.errors import DomainError
from rate_limiter import RateLimiter

log = structlog.get_logger("chat.ws")
router = APIRouter()
_ids = itertools.count(1)

POLICY_VIOLATION = 1008  # bad or expired token
TRY_AGAIN_LATER = 1013  # slow consumer: reconnect and resync
SUBPROTOCOL = "chat"

_CODES: dict[type[DomainError], ErrorCode] = {
    RoomNotFound: ErrorCode.NOT_FOUND,
    MessageNotFound: ErrorCode.NOT_FOUND,
    Forbidden: ErrorCode.FORBIDDEN,
    InvalidRequest: ErrorCode.INVALID,
}


class Closing(Exception):
    """Ends a connection's task group with a close code."""


class Connection:
    """One client socket: its joined rooms (each with the last seq queued to it) and its
    bounded outgoing queue."""

    def __init__(
        self,
        ws: WebSocket,
        caller: Caller,
        *,
        chat: ChatService,
        hub: Hub,
        limiter: RateLimiter,
        settings: ChatSettings,
        metrics: ChatMetrics,
    ) -> None:
        self.ws = ws
        self.caller = caller
        self.user = caller.username
        self.key = f"conn:{next(_ids)}"
        self.chat = chat
        self.hub = hub
        self.limiter = limiter
        self.settings = settings
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue(settings.send_queue_size)
        self.rooms: dict[int, int] = {}  # room -> last seq queued
        self.paused: dict[int, list[tuple[int, str]]] = {}  # rooms replaying from SQL
        self.close_code: int | None = None
        self.close_reason = ""
        self._scope: anyio.CancelScope | None = None

    # -- called by the hub -------------------------------------------------------------
    def joined_at(self, room_id: int, seq: int) -> None:
        self.rooms.setdefault(room_id, seq)

    def push(self, room_id: int, seq: int, text: str) -> None:
        held = self.paused.get(room_id)
        if held is not None:
            held.append((seq, text))
            if len(held) > self.settings.send_queue_size:
                self.close(TRY_AGAIN_LATER, "too far behind; reconnect and sync")
            return
        if seq <= self.rooms.get(room_id, seq):
            return
        self.rooms[room_id] = seq
        self._enqueue(text, room_id, seq)

    def push_event(self, text: str) -> None:
        self._enqueue(text, 0, 0)

    def send(self, frame: dict[str, Any]) -> None:
        self._enqueue(dumps(frame), 0, 0)

    def _enqueue(self, text: str, room_id: int, seq: int) -> None:
        if self.close_code is not None:
            return
        try:
            self.queue.put_nowait((text, room_id, seq))
        except asyncio.QueueFull:
            self.metrics.slow_consumers.inc()
            self.close(TRY_AGAIN_LATER, "slow consumer: send queue full; reconnect and sync")

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._scope is not None:
            self._scope.cancel()

    # -- the three tasks ---------------------------------------------------------------
    async def run(self) -> None:
        self.metrics.connections.inc()
        try:
            async with anyio.create_task_group() as tg:
                self._scope = tg.cancel_scope
                tg.start_soon(self._receiver)
                tg.start_soon(self._sender)
                tg.start_soon(self._expiry)
        finally:
            self.metrics.connections.dec()
            with anyio.CancelScope(shield=True):
                for room_id in list(self.rooms):
                    with contextlib.suppress(Exception):
                        await self.hub.detach(self, room_id)
                if self.close_code is not None:
                    with (
                        anyio.move_on_after(self.settings.close_timeout),
                        contextlib.suppress(Exception),
                    ):
                        await self.ws.close(self.close_code, self.close_reason)

    async def _sender(self) -> None:
        try:
            while True:
                text, room_id, seq = await self.queue.get()
                await self.ws.send_text(text)
                if seq:
                    self.hub.delivered(room_id, self.user, seq)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The client went away mid-send: the receiver learns it too; end the group.
            if self._scope is not None:
                self._scope.cancel()

    async def _expiry(self) -> None:
        await anyio.sleep(max(self.caller.expires_at - time.time(), 0))
        self.close(POLICY_VIOLATION, "token expired")

    async def _receiver(self) -> None:
        limit = self.settings.max_frame_bytes
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    self._error(ErrorCode.INVALID, "send JSON in text frames")
                    continue
                if len(text) > limit or len(text.encode()) > limit:
                    self._error(ErrorCode.TOO_LARGE, f"frames are limited to {limit} bytes")
                    continue
                try:
                    await self._handle(parse(text))
                except BadFrame as exc:
                    self._error(exc.code, exc.detail)
                except DomainError as exc:
                    code = next((c for t, c in _CODES.items() if isinstance(exc, t)), None)
                    self._error(code or ErrorCode.INVALID, exc.detail)
                except Exception as exc:  # SQL or Redis overloaded or down: this frame only
                    self._error(ErrorCode.UNAVAILABLE, "storage unavailable; try again")
                    log.warning("frame_failed", error=repr(exc)[:300])
        except WebSocketDisconnect:
            pass
        if self._scope is not None:
            self._scope.cancel()

    def _error(self, code: ErrorCode, detail: str, **extra: Any) -> None:
        self.metrics.frame_errors.labels(code.value).inc()
        self.send(error_frame(code, detail, **extra))

    def _require_joined(self, room_id: int) -> None:
        if room_id not in self.rooms:
            raise _NotJoined(room_id)

    # -- frames ------------------------------------------------------------------------
    async def _handle(self, frame: ClientFrame) -> None:
        try:
            await self._dispatch(frame)
        except _NotJoined as exc:
            self._error(ErrorCode.NOT_JOINED, f"join room {exc.room} first", room=exc.room)

    async def _dispatch(self, frame: ClientFrame) -> None:
        match frame:
            case Ping():
                self.send({"type": "pong"})
            case Join(room=room, after_seq=after):
                if room not in self.rooms:
                    await self.chat.enter(self.caller, room)
                    if after is not None:
                        self.paused[room] = []
                    try:
                        latest = await self.hub.attach(self, room)
                    except BaseException:
                        self.paused.pop(room, None)
                        raise
                    self.send({"type": "joined", "room": room, "seq": latest})
                    if after is not None:
                        self.rooms[room] = after
                        await self._replay(room, after)
                else:
                    self.send({"type": "joined", "room": room, "seq": self.rooms[room]})
                    if after is not None:
                        await self._sync(room, after)
            case Leave(room=room):
                self._require_joined(room)
                await self.hub.detach(self, room)
                self.rooms.pop(room, None)
                self.send({"type": "left", "room": room})
            case Send(room=room, text=text, client_id=client_id):
                self._require_joined(room)
                decision = await self.limiter.acquire(self.key)
                if not decision.allowed:
                    self._error(
                        ErrorCode.RATE_LIMITED,
                        "sending too fast",
                        room=room,
                        client_id=client_id,
                        retry_after=round(decision.retry_after, 3),
                    )
                    return
                msg, created = await self.chat.send(
                    self.caller, room, text=text, client_id=client_id
                )
                (self.metrics.messages if created else self.metrics.duplicates).inc()
                self.send(
                    {
                        "type": "ack",
                        "room": room,
                        "client_id": client_id,
                        "id": msg.id,
                        "seq": msg.seq,
                        "duplicate": not created,
                    }
                )
            case Sync(room=room, after_seq=after):
                await self._sync(room, after)
            case Typing(room=room):
                self._require_joined(room)
                await self.chat.typing(self.caller, room)
            case Read(room=room, seq=seq):
                self._require_joined(room)
                await self.chat.read(self.caller, room, seq)
            case Edit(room=room, id=message_id, text=text):
                self._require_joined(room)
                await self._limited()
                await self.chat.edit(self.caller, room, message_id, text)
            case Delete(room=room, id=message_id):
                self._require_joined(room)
                await self._limited()
                await self.chat.delete(self.caller, room, message_id)

    async def _limited(self) -> None:
        decision = await self.limiter.acquire(self.key)
        if not decision.allowed:
            raise InvalidRequest(f"sending too fast; retry in {decision.retry_after:.2f}s")

    async def _sync(self, room: int, after: int) -> None:
        """Every message after `after`, in order, then `synced`; live ones wait meanwhile."""
        if room not in self.rooms:
            # Not joined: a read of history (members only for a private room).
            await self.chat.readable_room(self.caller, room)
            last = after
            while True:
                rows = await self.chat.store.messages(
                    room, after_seq=last, before_seq=None, limit=500
                )
                for msg in rows:
                    self.send(message_frame(msg))
                    last = msg.seq
                if len(rows) < 500:
                    break
            self.send({"type": "synced", "room": room, "seq": last})
            return
        self.paused[room] = []
        await self._replay(room, after)

    async def _replay(self, room: int, after: int) -> None:
        """Send SQL's messages after `after`, then the live ones held meanwhile (those not
        already sent); the room must be in `self.paused`."""
        try:
            last = after
            while True:
                rows = await self.chat.store.messages(
                    room, after_seq=last, before_seq=None, limit=500
                )
                for msg in rows:
                    self._enqueue(dumps(message_frame(msg)), room, msg.seq)
                    last = msg.seq
                if len(rows) < 500:
                    break
            self.rooms[room] = max(self.rooms.get(room, 0), last)
        finally:
            held = self.paused.pop(room, [])
        for seq, text in sorted(held):
            self.push(room, seq, text)
        self.send({"type": "synced", "room": room, "seq": self.rooms[room]})


class _NotJoined(Exception):
    def __init__(self, room: int) -> None:
        super().__init__(room)
        self.room = room


def _token(ws: WebSocket) -> tuple[str | None, str | None]:
    """The token (query `token`, or a `Sec-WebSocket-Protocol` entry) and the subprotocol to
    answer with (browsers offer ["chat", <token>] and need one of them echoed)."""
    token = ws.query_params.get("token")
    chosen = None
    for proto in ws.scope.get("subprotocols", []):
        if proto == SUBPROTOCOL:
            chosen = proto
        elif token is None and proto.count(".") == 2:
            token = proto
    return token, chosen


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    state = ws.app.state
    token, subprotocol = _token(ws)
    await ws.accept(subprotocol=subprotocol)
    accounts: AccountService = state.accounts
    try:
        caller = accounts.authenticate(token)
    except Unauthorized as exc:
        await ws.close(POLICY_VIOLATION, exc.detail)
        return
    conn = Connection(
        ws,
        caller,
        chat=state.chat,
        hub=state.hub,
        limiter=state.send_limiter,
        settings=state.settings,
        metrics=state.chat_metrics,
    )
    await conn.run()
