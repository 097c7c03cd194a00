"""Domain exceptions; app.py maps each to an HTTP status once, ws.py to an `error` frame code."""

from common.errors import DomainError


class Unauthorized(DomainError):
    title = "Authentication required"


class Forbidden(DomainError):
    title = "Not allowed"


class UserNotFound(DomainError):
    title = "User not found"


class UsernameTaken(DomainError):
    title = "Username already taken"


class RoomNotFound(DomainError):
    title = "Room not found"


class RoomNameTaken(DomainError):
    title = "Room name already taken"


class MessageNotFound(DomainError):
    title = "Message not found"


class InvalidRequest(DomainError):
    title = "Invalid request"
