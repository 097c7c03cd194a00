"""Domain exceptions; app.py maps each to an HTTP status once."""

from common.errors import DomainError


class LinkNotFound(DomainError):
    title = "Link not found"


class LinkGone(DomainError):
    title = "Link gone"


class AliasTaken(DomainError):
    title = "Alias already taken"


class InvalidTarget(DomainError):
    title = "URL refused"


class InvalidAlias(DomainError):
    title = "Alias refused"


class InvalidLink(DomainError):
    title = "Invalid link"


class Unauthorized(DomainError):
    title = "API key required"


class Forbidden(DomainError):
    title = "Not allowed"


class BadCursor(DomainError):
    title = "Invalid cursor"


class NotProtected(DomainError):
    title = "Link has no password"
