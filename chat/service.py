"""The domain: accounts, rooms, messages. Plain Python over the store, the bus and the local
hub; no FastAPI, no SQLAlchemy, no pydantic."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from chat.errors import Forbidden, InvalidRequest, RoomNotFound, Unauthorized, UserNotFound
from chat.hub import Hub
from chat.protocol import message_frame
from chat.store import ChatStore, MessageRecord, RoomRecord, UserRecord
from common.auth import InvalidToken, TokenIssuer, hash_password_async, verify_password_async

USERNAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
# A real hash to check against when the user does not exist, so a login takes as long for
# a wrong username as for a wrong password (no telling which usernames exist by timing).
_DUMMY_HASH = "scrypt$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request or connection acts for, from a verified token."""

    id: int
    username: str
    expires_at: float


class AccountService:
    def __init__(self, *, store: ChatStore, tokens: TokenIssuer) -> None:
        self.store = store
        self.tokens = tokens

    async def register(self, *, username: str, password: str) -> UserRecord:
        """Create an account; the password is kept only as a scrypt hash."""
        if not USERNAME.match(username):
            raise InvalidRequest("username: 1-32 letters, digits, '_', '.' or '-'")
        hashed = await hash_password_async(password)
        return await self.store.create_user(
            username=username, password_hash=hashed, now_ms=now_ms()
        )

    async def login(self, *, username: str, password: str) -> tuple[str, int]:
        """(access token, seconds it lasts) for the right password; `Unauthorized` otherwise."""
        try:
            user = await self.store.user_by_name(username)
            stored = user.password_hash
        except UserNotFound:
            user, stored = None, _DUMMY_HASH
        if not await verify_password_async(password, stored) or user is None:
            raise Unauthorized("wrong username or password")
        return self.tokens.issue(str(user.id), name=user.username)

    def authenticate(self, token: str | None) -> Caller:
        """The caller a token names; `Unauthorized` when it is missing, bad or expired."""
        if not token:
            raise Unauthorized("a bearer token is required")
        try:
            claims = self.tokens.verify(token)
            return Caller(int(claims["sub"]), str(claims["name"]), float(claims["exp"]))
        except (InvalidToken, KeyError, ValueError) as exc:
            raise Unauthorized("invalid or expired token") from exc


class ChatService:
    def __init__(self, *, store: ChatStore, hub: Hub, max_text_chars: int) -> None:
        self.store = store
        self.hub = hub
        self.max_text_chars = max_text_chars

    # -- rooms -------------------------------------------------------------------------
    async def create_room(
        self, caller: Caller, *, name: str, private: bool, members: list[str]
    ) -> RoomRecord:
        users = await self.store.users_by_name(members) if members else []
        room, _ = await self.store.create_room(
            name=name,
            private=private,
            creator=caller.id,
            members=[u.id for u in users],
            now_ms=now_ms(),
        )
        return room

    async def direct_room(self, caller: Caller, *, username: str) -> tuple[RoomRecord, bool]:
        """The one room between the caller and `username` (made on first use)."""
        other = await self.store.user_by_name(username)
        if other.id == caller.id:
            raise InvalidRequest("a direct room needs another user")
        low, high = sorted([(caller.id, caller.username), (other.id, other.username)])
        return await self.store.create_room(
            name=f"{low[1]}, {high[1]}",
            private=True,
            creator=caller.id,
            members=[other.id],
            now_ms=now_ms(),
            dm_key=f"{low[0]}:{high[0]}",
        )

    async def rooms(self, caller: Caller) -> list[dict[str, Any]]:
        return [
            {"room": room, "read_seq": read, "unread": unread, "members": members}
            for room, read, unread, members in await self.store.rooms_of(caller.id)
        ]

    async def public_rooms(self) -> list[RoomRecord]:
        return await self.store.public_rooms()

    async def find_room(self, name: str) -> RoomRecord:
        return await self.store.room_by_name(name)

    async def readable_room(self, caller: Caller, room_id: int) -> RoomRecord:
        """The room if the caller may read it: members only for a private room (which is
        reported as missing to others, so its existence does not leak)."""
        room = await self.store.room(room_id)
        if room.private and not await self.store.is_member(room_id, caller.id):
            raise RoomNotFound(f"no room {room_id}")
        return room

    async def enter(self, caller: Caller, room_id: int) -> RoomRecord:
        """Check the caller may join; a public room makes them a member."""
        return await self.store.enter(room_id, caller.id, now_ms())

    async def add_members(self, caller: Caller, room_id: int, usernames: list[str]) -> list[str]:
        room = await self.readable_room(caller, room_id)
        if room.direct:
            raise Forbidden("a direct room has exactly two members")
        if room.private and not await self.store.is_member(room_id, caller.id):
            raise Forbidden("only members add members to a private room")
        users = await self.store.users_by_name(usernames)
        await self.store.add_members(room_id, [u.id for u in users], now_ms())
        return await self.store.member_names(room_id)

    async def history(
        self,
        caller: Caller,
        room_id: int,
        *,
        after_seq: int | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[MessageRecord]:
        await self.readable_room(caller, room_id)
        return await self.store.messages(
            room_id, after_seq=after_seq, before_seq=before_seq, limit=limit
        )

    async def presence(self, caller: Caller, room_id: int) -> list[str]:
        await self.readable_room(caller, room_id)
        return await self.hub.present(room_id)

    # -- messages ----------------------------------------------------------------------
    def _check_text(self, text: str) -> str:
        if not text.strip():
            raise InvalidRequest("text is empty")
        if len(text) > self.max_text_chars:
            raise InvalidRequest(f"text is longer than {self.max_text_chars} characters")
        return text

    async def send(
        self, caller: Caller, room_id: int, *, text: str, client_id: str
    ) -> tuple[MessageRecord, bool]:
        """Store the message with the room's next seq and fan it out; a repeated client_id
        returns the stored message (and False) without storing or sending it again."""
        user = UserRecord(caller.id, caller.username, "")
        msg, created = await self.store.append(
            room_id=room_id,
            user=user,
            text=self._check_text(text),
            client_id=client_id,
            now_ms=now_ms(),
        )
        if created:
            await self.hub.publish_message(room_id, msg.seq, message_frame(msg))
        return msg, created

    async def edit(self, caller: Caller, room_id: int, message_id: int, text: str) -> MessageRecord:
        msg = await self.store.change_message(
            room_id=room_id,
            message_id=message_id,
            user_id=caller.id,
            text=self._check_text(text),
            now_ms=now_ms(),
        )
        frame = {
            "type": "edited",
            "room": room_id,
            "id": msg.id,
            "seq": msg.seq,
            "text": msg.text,
            "edited_ts": msg.edited_ts,
        }
        await self.hub.publish_event(room_id, frame)
        return msg

    async def delete(self, caller: Caller, room_id: int, message_id: int) -> MessageRecord:
        msg = await self.store.change_message(
            room_id=room_id, message_id=message_id, user_id=caller.id, text=None, now_ms=now_ms()
        )
        await self.hub.publish_event(
            room_id, {"type": "deleted", "room": room_id, "id": msg.id, "seq": msg.seq}
        )
        return msg

    async def read(self, caller: Caller, room_id: int, seq: int) -> None:
        """Move the caller's read watermark (SQL, for unread counts) and announce it."""
        await self.store.mark_read(room_id=room_id, user_id=caller.id, seq=seq)
        await self.hub.receipt(room_id, caller.username, "r", seq)

    async def typing(self, caller: Caller, room_id: int) -> None:
        await self.hub.publish_event(
            room_id, {"type": "typing", "room": room_id, "user": caller.username}
        )
