"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

Username = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]


class UserCreate(BaseModel):
    username: Username
    password: Annotated[str, Field(min_length=8, max_length=256)]


class UserRead(BaseModel):
    id: int
    username: str


class TokenRequest(BaseModel):
    username: Annotated[str, Field(min_length=1, max_length=32)]
    password: Annotated[str, Field(min_length=1, max_length=256)]


class TokenRead(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class RoomCreate(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s].*$")]
    private: Annotated[bool, Field(strict=True)] = False
    members: Annotated[list[Username], Field(max_length=1000)] = []


class RoomRead(BaseModel):
    id: int
    name: str
    private: bool
    direct: bool
    last_seq: int
    members: list[str] = []
    read_seq: int | None = None
    unread: int | None = None


class RoomList(BaseModel):
    rooms: list[RoomRead]


class MembersAdd(BaseModel):
    users: Annotated[list[Username], Field(min_length=1, max_length=1000)]


class MembersRead(BaseModel):
    room: int
    members: list[str]


class DirectCreate(BaseModel):
    user: Username


class MessageRead(BaseModel):
    id: int
    room: int
    seq: int
    user: str
    text: str
    ts: int
    client_id: str | None
    edited_ts: int | None = None
    deleted: bool = False


class MessagePage(BaseModel):
    room: int
    messages: list[MessageRead]
    # Pass as before_seq for the page before this one (None: this is the start).
    before_seq: int | None
    last_seq: int


class PresenceRead(BaseModel):
    room: int
    users: list[str]
