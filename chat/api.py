"""HTTP routes: accounts, rooms, history, presence. Parse, call the service, shape the reply."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import HTMLResponse

from chat.deps import AccountsDep, CallerDep, ChatDep
from chat.errors import RoomNotFound
from chat.schemas import (
    DirectCreate,
    MembersAdd,
    MembersRead,
    MessagePage,
    MessageRead,
    PresenceRead,
    RoomCreate,
    RoomList,
    RoomRead,
    TokenRead,
    TokenRequest,
    UserCreate,
    UserRead,
)
from chat.store import MessageRecord, RoomRecord
from common.openapi import problem_responses

api = APIRouter(prefix="/api", responses=problem_responses(503))
pages = APIRouter()
PAGE = Path(__file__).parent / "static" / "index.html"


def _room(room: RoomRecord, **extra: object) -> RoomRead:
    return RoomRead(
        id=room.id,
        name=room.name,
        private=room.private,
        direct=room.direct,
        last_seq=room.last_seq,
        **extra,  # type: ignore[arg-type]
    )


def _message(msg: MessageRecord) -> MessageRead:
    return MessageRead(
        id=msg.id,
        room=msg.room_id,
        seq=msg.seq,
        user=msg.user,
        text=msg.text,
        ts=msg.ts,
        client_id=msg.client_id,
        edited_ts=msg.edited_ts,
        deleted=msg.deleted,
    )


@pages.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text())


@api.post("/users", status_code=status.HTTP_201_CREATED, responses=problem_responses(409))
async def create_user(body: UserCreate, accounts: AccountsDep) -> UserRead:
    user = await accounts.register(username=body.username, password=body.password)
    return UserRead(id=user.id, username=user.username)


@api.post("/token", responses=problem_responses(401))
async def create_token(body: TokenRequest, accounts: AccountsDep) -> TokenRead:
    token, expires_in = await accounts.login(username=body.username, password=body.password)
    return TokenRead(access_token=token, expires_in=expires_in)


@api.post("/rooms", status_code=status.HTTP_201_CREATED, responses=problem_responses(401, 404, 409))
async def create_room(body: RoomCreate, caller: CallerDep, chat: ChatDep) -> RoomRead:
    room = await chat.create_room(
        caller, name=body.name, private=body.private, members=body.members
    )
    members = sorted({caller.username, *body.members})
    return _room(room, members=members, read_seq=0, unread=0)


@api.get("/rooms", responses=problem_responses(401))
async def list_rooms(
    caller: CallerDep,
    chat: ChatDep,
    public: Annotated[bool, Query(description="List every public room instead.")] = False,
    name: Annotated[str | None, Query(max_length=64, description="The room so named.")] = None,
) -> RoomList:
    """The caller's rooms with unread counts (or the public rooms, or one room by name)."""
    if name is not None:
        try:
            return RoomList(rooms=[_room(await chat.find_room(name))])
        except RoomNotFound:
            return RoomList(rooms=[])
    if public:
        return RoomList(rooms=[_room(r) for r in await chat.public_rooms()])
    return RoomList(
        rooms=[
            _room(r["room"], members=r["members"], read_seq=r["read_seq"], unread=r["unread"])
            for r in await chat.rooms(caller)
        ]
    )


@api.post("/rooms/{room}/members", responses=problem_responses(401, 403, 404))
async def add_members(room: int, body: MembersAdd, caller: CallerDep, chat: ChatDep) -> MembersRead:
    members = await chat.add_members(caller, room, body.users)
    return MembersRead(room=room, members=members)


@api.post(
    "/dms",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"description": "The direct room existed already."},
        **problem_responses(401, 404),
    },
)
async def direct_room(
    body: DirectCreate, caller: CallerDep, chat: ChatDep, response: Response
) -> RoomRead:
    """The one private room between the caller and `user`: 201 the first time, then 200."""
    room, created = await chat.direct_room(caller, username=body.user)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return _room(room, members=sorted({caller.username, body.user}))


@api.get("/rooms/{room}/messages", responses=problem_responses(401, 404))
async def history(
    room: int,
    caller: CallerDep,
    chat: ChatDep,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    after_seq: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MessagePage:
    """History from SQL in seq order: the first `limit` after `after_seq`, or the last
    `limit` before `before_seq`, or the latest."""
    messages = await chat.history(
        caller, room, after_seq=after_seq, before_seq=before_seq, limit=limit
    )
    first = messages[0].seq if messages else None
    info = await chat.readable_room(caller, room)
    return MessagePage(
        room=room,
        messages=[_message(m) for m in messages],
        before_seq=first if first and first > 1 else None,
        last_seq=info.last_seq,
    )


@api.get("/rooms/{room}/presence", responses=problem_responses(401, 404))
async def presence(room: int, caller: CallerDep, chat: ChatDep) -> PresenceRead:
    return PresenceRead(room=room, users=await chat.presence(caller, room))
