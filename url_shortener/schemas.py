"""Request and response models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from url_shortener.codes import CODE_LENGTH
from url_shortener.targets import MAX_URL_LENGTH, RESERVED_ALIASES


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


ExpiresAt = Annotated[
    datetime | None,
    AfterValidator(_utc),
    Field(description="In the future (an expired time is refused, 422); naive times are UTC."),
]

# The schema states what `targets.check_target` and `check_alias` accept, as far as a pattern
# can (blocked domains and the shortener's own hosts are settings); the service checks, so
# the refusal names its reason. A URL: http(s), a host of letters, digits, '_', '-' and dots,
# an optional port from 1 to 65535, then no spaces, control characters or backslashes.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_URL_LENGTH,
    "pattern": (
        r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*"
        rf"(:{_PORT})?([/?#][^\x00-\x20\x7f\\]*)?$"
    ),
    "description": "An http(s) URL; links to blocked domains or to this shortener are refused.",
}
Url = Annotated[str, Field(min_length=1, max_length=4096), WithJsonSchema(URL_SCHEMA)]


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


ALIAS_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": r"^[A-Za-z0-9_-]{3,64}$",
    "not": {
        "anyOf": [
            # Reserved for generated codes, and the service's own words.
            {"pattern": rf"^[A-Za-z0-9]{{{CODE_LENGTH}}}$"},
            {"pattern": "^(" + "|".join(_any_case(w) for w in sorted(RESERVED_ALIASES)) + ")$"},
        ]
    },
    "description": f"3 to 64 of A-Z, a-z, 0-9, '_' and '-'; not {CODE_LENGTH} letters and "
    "digits alone (the shape of generated codes), nor a reserved word.",
}
Alias = Annotated[
    str | None,
    Field(max_length=200),
    WithJsonSchema({"anyOf": [ALIAS_SCHEMA, {"type": "null"}]}),
]

Tag = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,40}$")]
RedirectStatus = Literal[301, 302, 307, 308]


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    alias: Alias = None
    expires_at: ExpiresAt = None
    max_visits: int | None = Field(default=None, ge=1, le=2_000_000_000)
    redirect_status: RedirectStatus = 302
    password: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class LinkUpdate(BaseModel):
    """Only the fields present are changed; `null` clears expires_at, max_visits, password."""

    model_config = ConfigDict(extra="forbid")

    # (absent: unchanged; null is refused for these two, so the schema does not allow it)
    url: Annotated[Url | None, WithJsonSchema(URL_SCHEMA)] = None
    expires_at: ExpiresAt = None
    max_visits: int | None = Field(default=None, ge=1, le=2_000_000_000)
    redirect_status: Annotated[
        RedirectStatus | None, WithJsonSchema({"enum": [301, 302, 307, 308]})
    ] = None
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


class KeyRead(BaseModel):
    """A minted key as listed: never its secret (only a hash is stored anyway)."""

    id: int
    name: str
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Within a minute; null if never used.")


class KeyCreated(BaseModel):
    id: int
    name: str
    prefix: str
    key: str = Field(description="Shown once; only its hash is stored.")
    created_at: datetime
