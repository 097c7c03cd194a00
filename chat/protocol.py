"""The WebSocket protocol: client frames (validated) and server frames (built here only).

Every frame is a JSON object with a `type`. The README documents each with an example.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from chat.store import MessageRecord

ClientId = Annotated[str, Field(min_length=1, max_length=64)]
Seq = Annotated[int, Field(ge=0)]


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    room: int = Field(ge=1)


class Join(_Frame):
    type: Literal["join"]
    # Replay what came after this seq before going live: a reconnect with nothing lost or doubled.
    after_seq: Seq | None = None


class Leave(_Frame):
    type: Literal["leave"]


class Send(_Frame):
    type: Literal["send"]
    text: Annotated[str, Field(min_length=1)]
    client_id: ClientId


class Sync(_Frame):
    type: Literal["sync"]
    after_seq: Seq


class Typing(_Frame):
    type: Literal["typing"]


class Read(_Frame):
    type: Literal["read"]
    seq: Seq


class Edit(_Frame):
    type: Literal["edit"]
    id: int
    text: Annotated[str, Field(min_length=1)]


class Delete(_Frame):
    type: Literal["delete"]
    id: int


class Ping(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    type: Literal["ping"]


ClientFrame = Join | Leave | Send | Sync | Typing | Read | Edit | Delete | Ping
CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(
    Annotated[ClientFrame, Field(discriminator="type")]
)
CLIENT_TYPES = {"join", "leave", "send", "sync", "typing", "read", "edit", "delete", "ping"}


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    NOT_JOINED = "not_joined"
    UNAVAILABLE = "unavailable"


class BadFrame(Exception):
    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse(text: str) -> ClientFrame:
    """A validated client frame, or `BadFrame` saying what is wrong with it."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadFrame(ErrorCode.BAD_JSON, "frame is not valid JSON") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadFrame(ErrorCode.INVALID, "a frame is a JSON object with a string `type`")
    if data["type"] not in CLIENT_TYPES:
        raise BadFrame(ErrorCode.UNKNOWN_TYPE, f"unknown frame type {data['type'][:32]!r}")
    try:
        return CLIENT_FRAME.validate_python(data)
    except ValueError as exc:
        errors: list[Any] = getattr(exc, "errors", lambda: [])()
        first = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"][1:]) or "frame"
        raise BadFrame(ErrorCode.INVALID, f"{where}: {first['msg']}") from exc


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def message_frame(msg: MessageRecord) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "message",
        "room": msg.room_id,
        "id": msg.id,
        "seq": msg.seq,
        "user": msg.user,
        "text": msg.text,
        "ts": msg.ts,
        "client_id": msg.client_id,
    }
    if msg.edited_ts is not None:
        frame["edited_ts"] = msg.edited_ts
    if msg.deleted:
        frame["deleted"] = True
    return frame


def error_frame(code: ErrorCode, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code.value, "detail": detail, **extra}
