"""SQL persistence: users, rooms, members and messages, and the queries the service needs.

The per-room `seq` lives on the room row: a send bumps `rooms.last_seq` and inserts the
message in one transaction, so the row lock orders concurrent senders (on every instance),
a rolled-back send leaves no hole, and nothing about it is lost when Redis is.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    func,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from chat.errors import MessageNotFound, RoomNameTaken, RoomNotFound, UsernameTaken, UserNotFound
from common.db import transaction

BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "chat_users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Room(Base):
    __tablename__ = "chat_rooms"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    # Lower-cased name of a named room (unique); NULL for direct rooms.
    name_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    # "<low user id>:<high user id>" of a direct room, so there is one per pair.
    dm_key: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_by: Mapped[int] = mapped_column(ForeignKey("chat_users.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Member(Base):
    __tablename__ = "chat_members"
    room_id: Mapped[int] = mapped_column(ForeignKey("chat_rooms.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("chat_users.id"), primary_key=True)
    read_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    joined_ms: Mapped[int] = mapped_column(BigInteger)


class Message(Base):
    __tablename__ = "chat_messages"
    __table_args__ = (
        UniqueConstraint("room_id", "seq", name="uq_chat_messages_room_seq"),
        UniqueConstraint("room_id", "user_id", "client_id", name="uq_chat_messages_client"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("chat_rooms.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(ForeignKey("chat_users.id"))
    username: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    ts: Mapped[int] = mapped_column(BigInteger)  # ms since the epoch
    edited_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    username: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class RoomRecord:
    id: int
    name: str
    private: bool
    direct: bool
    last_seq: int


@dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    room_id: int
    seq: int
    user: str
    text: str
    client_id: str | None
    ts: int
    edited_ts: int | None
    deleted: bool


def _user(row: User) -> UserRecord:
    return UserRecord(row.id, row.username, row.password_hash)


def _room(row: Room) -> RoomRecord:
    return RoomRecord(row.id, row.name, row.private, row.dm_key is not None, row.last_seq)


def _message(row: Message) -> MessageRecord:
    return MessageRecord(
        row.id,
        row.room_id,
        row.seq,
        row.username,
        "" if row.deleted else row.text,
        row.client_id,
        row.ts,
        row.edited_ms,
        row.deleted,
    )


class _Duplicate(Exception):
    def __init__(self, message: MessageRecord) -> None:
        self.message = message


class ChatStore:
    """Every query the service runs, each in its own transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    # -- users -------------------------------------------------------------------------
    async def create_user(self, *, username: str, password_hash: str, now_ms: int) -> UserRecord:
        try:
            async with transaction(self.sessions) as s:
                row = User(username=username, password_hash=password_hash, created_ms=now_ms)
                s.add(row)
                await s.flush()
                return _user(row)
        except IntegrityError as exc:
            raise UsernameTaken(f"{username!r} is taken") from exc

    async def user_by_name(self, username: str) -> UserRecord:
        async with self.sessions() as s:
            row = await s.scalar(select(User).where(User.username == username))
        if row is None:
            raise UserNotFound(f"no user {username!r}")
        return _user(row)

    async def users_by_name(self, usernames: list[str]) -> list[UserRecord]:
        async with self.sessions() as s:
            rows = (await s.scalars(select(User).where(User.username.in_(usernames)))).all()
        found = {r.username for r in rows}
        missing = [u for u in usernames if u not in found]
        if missing:
            raise UserNotFound(f"no user {missing[0]!r}")
        return [_user(r) for r in rows]

    # -- rooms -------------------------------------------------------------------------
    async def create_room(
        self,
        *,
        name: str,
        private: bool,
        creator: int,
        members: list[int],
        now_ms: int,
        dm_key: str | None = None,
    ) -> tuple[RoomRecord, bool]:
        """The new room (and True), or for a direct room that exists already, it (and False)."""
        try:
            async with transaction(self.sessions) as s:
                room = Room(
                    name=name,
                    name_key=None if dm_key else name.lower(),
                    dm_key=dm_key,
                    private=private,
                    last_seq=0,
                    created_by=creator,
                    created_ms=now_ms,
                )
                s.add(room)
                await s.flush()
                for uid in dict.fromkeys([creator, *members]):
                    s.add(Member(room_id=room.id, user_id=uid, read_seq=0, joined_ms=now_ms))
                return _room(room), True
        except IntegrityError as exc:
            if dm_key is None:
                raise RoomNameTaken(f"a room named {name!r} exists") from exc
        async with self.sessions() as s:
            row = await s.scalar(select(Room).where(Room.dm_key == dm_key))
        if row is None:  # pragma: no cover - the conflict was on something else
            raise RoomNotFound("direct room vanished")
        return _room(row), False

    async def room(self, room_id: int) -> RoomRecord:
        async with self.sessions() as s:
            row = await s.get(Room, room_id)
        if row is None:
            raise RoomNotFound(f"no room {room_id}")
        return _room(row)

    async def room_by_name(self, name: str) -> RoomRecord:
        async with self.sessions() as s:
            row = await s.scalar(select(Room).where(Room.name_key == name.lower()))
        if row is None:
            raise RoomNotFound(f"no room named {name!r}")
        return _room(row)

    async def is_member(self, room_id: int, user_id: int) -> bool:
        async with self.sessions() as s:
            return await s.get(Member, (room_id, user_id)) is not None

    async def enter(self, room_id: int, user_id: int, now_ms: int) -> RoomRecord:
        """The room, the user made a member of it if it is public; `RoomNotFound` for a
        private room the user is not in. One read, and a write only for a newcomer."""
        async with self.sessions() as s:
            room = await s.get(Room, room_id)
            member = room is not None and await s.get(Member, (room_id, user_id)) is not None
        if room is None or (room.private and not member):
            raise RoomNotFound(f"no room {room_id}")
        if not member:
            await self.add_members(room_id, [user_id], now_ms)
        return _room(room)

    async def last_seqs(self, room_ids: list[int]) -> dict[int, int]:
        async with self.sessions() as s:
            rows = await s.execute(select(Room.id, Room.last_seq).where(Room.id.in_(room_ids)))
            return dict(rows.tuples().all())

    async def add_members(self, room_id: int, user_ids: list[int], now_ms: int) -> None:
        async with transaction(self.sessions) as s:
            have = set(
                (await s.scalars(select(Member.user_id).where(Member.room_id == room_id))).all()
            )
            for uid in dict.fromkeys(user_ids):
                if uid not in have:
                    s.add(Member(room_id=room_id, user_id=uid, read_seq=0, joined_ms=now_ms))

    async def member_names(self, room_id: int) -> list[str]:
        async with self.sessions() as s:
            q = (
                select(User.username)
                .join(Member, Member.user_id == User.id)
                .where(Member.room_id == room_id)
                .order_by(User.username)
            )
            return list((await s.scalars(q)).all())

    async def rooms_of(self, user_id: int) -> list[tuple[RoomRecord, int, int, list[str]]]:
        """The user's rooms, each with its read watermark, unread count and members."""
        async with self.sessions() as s:
            q = (
                select(Room, Member.read_seq)
                .join(Member, Member.room_id == Room.id)
                .where(Member.user_id == user_id)
                .order_by(Room.id)
            )
            rows = (await s.execute(q)).all()
            unread_q = (
                select(Message.room_id, func.count())
                .join(
                    Member,
                    and_(Member.room_id == Message.room_id, Member.user_id == user_id),
                )
                .where(
                    Message.seq > Member.read_seq,
                    Message.user_id != user_id,
                    Message.deleted.is_(False),
                )
                .group_by(Message.room_id)
            )
            unread = dict((await s.execute(unread_q)).tuples().all())
            names_q = (
                select(Member.room_id, User.username)
                .join(User, User.id == Member.user_id)
                .where(Member.room_id.in_([r.id for r, _ in rows]))
                .order_by(User.username)
            )
            members: dict[int, list[str]] = {}
            for rid, uname in (await s.execute(names_q)).tuples():
                members.setdefault(rid, []).append(uname)
        return [(_room(r), read, unread.get(r.id, 0), members.get(r.id, [])) for r, read in rows]

    async def public_rooms(self) -> list[RoomRecord]:
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Room).where(Room.private.is_(False), Room.dm_key.is_(None)).order_by(Room.id)
            )
            return [_room(r) for r in rows]

    # -- messages ----------------------------------------------------------------------
    async def append(
        self, *, room_id: int, user: UserRecord, text: str, client_id: str | None, now_ms: int
    ) -> tuple[MessageRecord, bool]:
        """Store a message with the room's next seq: (it, True); or the message this client
        already sent with that client_id: (it, False)."""
        try:
            async with transaction(self.sessions) as s:
                # The row lock comes first: concurrent senders queue here, and the duplicate
                # check below then sees whatever the one before committed.
                seq = await s.scalar(
                    update(Room)
                    .where(Room.id == room_id)
                    .values(last_seq=Room.last_seq + 1)
                    .returning(Room.last_seq)
                )
                if seq is None:
                    raise RoomNotFound(f"no room {room_id}")
                if client_id is not None:
                    found = await s.scalar(self._by_client(room_id, user.id, client_id))
                    if found is not None:
                        raise _Duplicate(_message(found))  # rolls back: the seq is not used
                row = Message(
                    room_id=room_id,
                    seq=seq,
                    user_id=user.id,
                    username=user.username,
                    text=text,
                    client_id=client_id,
                    ts=now_ms,
                    deleted=False,
                )
                s.add(row)
                await s.flush()
                return _message(row), True
        except _Duplicate as dup:
            return dup.message, False
        except IntegrityError:
            # The same client_id raced itself past the check; the first one won.
            async with self.sessions() as s:
                found = await s.scalar(self._by_client(room_id, user.id, client_id or ""))
            if found is None:
                raise
            return _message(found), False

    @staticmethod
    def _by_client(room_id: int, user_id: int, client_id: str):  # type: ignore[no-untyped-def]
        return select(Message).where(
            Message.room_id == room_id, Message.user_id == user_id, Message.client_id == client_id
        )

    async def messages(
        self, room_id: int, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[MessageRecord]:
        """A page of history in seq order: the first `limit` after `after_seq`, else the last
        `limit` before `before_seq` (or the latest)."""
        q = select(Message).where(Message.room_id == room_id)
        if after_seq is not None:
            q = q.where(Message.seq > after_seq)
        if before_seq is not None:
            q = q.where(Message.seq < before_seq)
        ascending = after_seq is not None
        q = q.order_by(Message.seq.asc() if ascending else Message.seq.desc()).limit(limit)
        async with self.sessions() as s:
            rows = [_message(r) for r in (await s.scalars(q)).all()]
        return rows if ascending else rows[::-1]

    async def change_message(
        self, *, room_id: int, message_id: int, user_id: int, text: str | None, now_ms: int
    ) -> MessageRecord:
        """Edit (`text`) or delete (`text=None`) the user's own message."""
        async with transaction(self.sessions) as s:
            row = await s.get(Message, message_id)
            if row is None or row.room_id != room_id or row.deleted:
                raise MessageNotFound(f"no message {message_id} in room {room_id}")
            if row.user_id != user_id:
                raise MessageNotFound(f"message {message_id} is not yours")
            if text is None:
                row.deleted = True
                row.text = ""
            else:
                row.text = text
            row.edited_ms = now_ms
            await s.flush()
            return _message(row)

    async def mark_read(self, *, room_id: int, user_id: int, seq: int) -> int:
        """Move the user's read watermark forward (never back); the watermark after."""
        async with transaction(self.sessions) as s:
            await s.execute(
                update(Member)
                .where(Member.room_id == room_id, Member.user_id == user_id, Member.read_seq < seq)
                .values(read_seq=seq)
            )
            member = await s.get(Member, (room_id, user_id))
            return member.read_seq if member else 0

    async def read_watermarks(self, room_id: int) -> dict[str, int]:
        async with self.sessions() as s:
            q = (
                select(User.username, Member.read_seq)
                .join(Member, Member.user_id == User.id)
                .where(Member.room_id == room_id)
            )
            return dict((await s.execute(q)).tuples().all())


async def check_database(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(select(1))
