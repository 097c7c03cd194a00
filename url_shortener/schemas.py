"""Request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


def _utc(value: datetime | None) -> datetime | None:
    """Naive times are UTC; everything is stored in UTC (and must be representable there)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("date out of range") from exc


ExpiresAt = Annotated[datetime | None, AfterValidator(_utc)]

Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,40}$")]
RedirectStatus = Literal[301, 302, 307, 308]


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=4096)
    alias: str | None = Field(default=None, max_length=200)
    expires_at: ExpiresAt = None
    max_visits: int | None = Field(default=None, ge=1, le=2_000_000_000)
    redirect_status: RedirectStatus = 302
    password: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class LinkUpdate(BaseModel):
    """Only the fields present are changed; `null` clears expires_at, max_visits, password."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, min_length=1, max_length=4096)
    expires_at: ExpiresAt = None
    max_visits: int | None = Field(default=None, ge=1, le=2_000_000_000)
    redirect_status: RedirectStatus | None = None
    password: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] | None = Field(default=None, max_length=20)


class LinkRead(BaseModel):
    code: str
    short_url: str
    url: str
    created_at: datetime
    expires_at: datetime | None
    max_visits: int | None
    redirect_status: int
    tags: list[str]
    visits: int
    has_password: bool


class LinkPage(BaseModel):
    items: list[LinkRead]
    next_cursor: str | None


class BulkCreate(BaseModel):
    """Each item is validated on its own, so one bad item does not sink the others."""

    model_config = ConfigDict(extra="forbid")

    links: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class BulkItemResult(BaseModel):
    index: int
    status: int
    link: LinkRead | None = None
    error: dict[str, Any] | None = None


class BulkResult(BaseModel):
    created: int
    failed: int
    results: list[BulkItemResult]


class LinkStats(BaseModel):
    code: str
    total: int
    unique_visitors: int
    humans: int
    bots: int
    per_day: list[dict[str, Any]]
    top_referrers: list[dict[str, Any]]
    browsers: list[dict[str, Any]]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)


class KeyCreated(BaseModel):
    id: int
    name: str
    prefix: str
    key: str = Field(description="Shown once; only its hash is stored.")
    created_at: datetime
