"""Request and response models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from notifications.schedule import parse_hhmm, valid_timezone

Channel = Literal["email", "sms", "webhook", "inapp"]
Priority = Literal["low", "normal", "high", "critical"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
CATEGORY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
HHMM = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NotificationCreate(Strict):
    user_id: Name | None = None
    topic: Name | None = None
    template: Name
    data: dict[str, Any] = Field(default_factory=dict)
    category: Name = "general"
    channels: list[Channel] | None = Field(default=None, min_length=1)
    priority: Priority = "normal"
    send_at: datetime | None = None

    @model_validator(mode="after")
    def _one_audience(self) -> NotificationCreate:
        if (self.user_id is None) == (self.topic is None):
            raise ValueError("give exactly one of user_id and topic")
        return self


class AttemptRead(BaseModel):
    status: str
    at: float
    provider: str | None
    error: str | None


class DeliveryRead(BaseModel):
    id: str
    user_id: str
    channel: str
    status: str
    provider: str | None
    attempts: int
    next_at: float | None
    error: str | None
    trail: list[AttemptRead]


class NotificationRead(BaseModel):
    id: str
    user_id: str | None
    topic: str | None
    template: str
    template_version: int
    category: str
    priority: str
    created_at: float
    send_at: float | None
    status: str  # "pending" until every delivery is terminal, then "done"
    deliveries: list[DeliveryRead]


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    next_cursor: str | None


class UserWrite(Strict):
    email: str | None = Field(default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    phone: str | None = Field(default=None, pattern=r"^\+[1-9][0-9]{6,14}$")
    webhook_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not valid_timezone(value):
            raise ValueError("not an IANA time zone (e.g. Europe/Paris)")
        return value


class UserRead(BaseModel):
    id: str
    email: str | None
    phone: str | None
    webhook_url: str | None
    timezone: str
    preferences: dict[str, Any]


class QuietHours(Strict):
    start: HHMM
    end: HHMM


class Preferences(Strict):
    # {category: {channel: on/off}}; absent means on.
    channels: dict[str, dict[Channel, StrictBool]] = Field(default_factory=dict)
    quiet_hours: QuietHours | None = None
    # {category: seconds}: events of that category within the window go out as one message.
    digest: dict[str, Annotated[int, Field(ge=1, le=7 * 86400)]] = Field(default_factory=dict)

    @field_validator("channels", "digest")
    @classmethod
    def _categories(cls, value: dict[str, Any]) -> dict[str, Any]:
        if any(not CATEGORY.fullmatch(k) for k in value):
            raise ValueError("categories are 1-64 of A-Z a-z 0-9 _ . : -")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _nonempty(cls, value: QuietHours | None) -> QuietHours | None:
        if value is not None and parse_hhmm(value.start) == parse_hhmm(value.end):
            raise ValueError("quiet hours need start != end")
        return value


class Variant(Strict):
    subject: str | None = Field(default=None, max_length=2000)
    title: str | None = Field(default=None, max_length=2000)
    text: str = Field(max_length=20_000)
    html: str | None = Field(default=None, max_length=100_000)


class TemplateWrite(Strict):
    # Per channel; "default" serves channels without their own.
    variants: dict[Literal["email", "sms", "webhook", "inapp", "default"], Variant] = Field(
        min_length=1
    )
    # Data the template is test-rendered with at PUT (every variable it uses).
    example: dict[str, Any] = Field(default_factory=dict)


class TemplateRead(BaseModel):
    name: str
    version: int
    variants: dict[str, dict[str, str]]
    example: dict[str, Any]
    created_at: float


class PreviewRequest(Strict):
    data: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class Preview(BaseModel):
    name: str
    version: int
    rendered: dict[str, dict[str, str]]


class Subscribe(Strict):
    user_ids: list[Name] = Field(min_length=1, max_length=1000)


class Subscribers(BaseModel):
    topic: str
    user_ids: list[str]


class InboxItemRead(BaseModel):
    id: int
    notification_id: str
    title: str
    body: str
    created_at: float
    read: bool
    archived: bool


class InboxPage(BaseModel):
    items: list[InboxItemRead]
    unread: int
    next_cursor: str | None


class UnreadCount(BaseModel):
    unread: int


class DeadLetter(BaseModel):
    id: str
    notification_id: str
    user_id: str
    channel: str
    status: str
    attempts: int
    error: str | None
    updated_at: float


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]


class ProviderRead(BaseModel):
    name: str
    channel: str
    state: str
    failures: int
    opened_at: float | None
    opened_total: int


class Cancelled(BaseModel):
    id: str
    cancelled: int
