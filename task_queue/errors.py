"""Domain exceptions; app.py maps each to an HTTP status once."""

from common.errors import DomainError


class JobNotFound(DomainError):
    title = "Job not found"


class ScheduleNotFound(DomainError):
    title = "Schedule not found"


class WorkflowNotFound(DomainError):
    title = "Workflow not found"


class InvalidJob(DomainError):
    title = "Invalid job"


class JobConflict(DomainError):
    title = "Job state conflict"


class BadCursor(DomainError):
    title = "Invalid cursor"


class Unauthorized(DomainError):
    title = "API key required"
