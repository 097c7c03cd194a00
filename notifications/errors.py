"""Domain exceptions; app.py maps each to an HTTP status once."""

from common.errors import DomainError


class NotFound(DomainError):
    title = "Not found"


class InvalidNotification(DomainError):
    title = "Invalid notification"


class TemplateError(DomainError):
    title = "Template does not render"


class IdempotencyConflict(DomainError):
    title = "Idempotency key reused"


class BadCursor(DomainError):
    title = "Invalid cursor"


class Unauthorized(DomainError):
    title = "API key required"


class NotReplayable(DomainError):
    title = "Not a dead letter"
