"""Routes only: parse, call the service, shape the response. Reads are open; every write
needs X-API-Key (the admin key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import StreamingResponse

from common.openapi import problem_responses
from notifications.deps import AdminDep, DirectoryDep, InboxDep, NotificationsDep, ProvidersDep
from notifications.inbox import Filter
from notifications.schemas import (
    Cancelled,
    DeadLetterPage,
    InboxItemRead,
    InboxPage,
    Name,
    NotificationCreate,
    NotificationPage,
    NotificationRead,
    Preferences,
    Preview,
    PreviewRequest,
    ProviderRead,
    Subscribe,
    Subscribers,
    TemplateRead,
    TemplateWrite,
    UnreadCount,
    UserRead,
    UserWrite,
)

api = APIRouter(prefix="/api", responses=problem_responses(503))
WRITE = problem_responses(401)
Cursor = Annotated[str | None, Query(max_length=20)]
Limit = Annotated[int, Query(ge=1, le=200)]
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@api.post(
    "/notifications",
    status_code=202,
    tags=["notifications"],
    responses={**WRITE, **problem_responses(409, 422)},
)
async def send(
    body: NotificationCreate,
    service: NotificationsDep,
    _: AdminDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> NotificationRead:
    """Accept a notification for a user or a topic; the same Idempotency-Key never sends
    twice (the first answer is returned again, with `Idempotent-Replayed: true`)."""
    result, created = await service.submit(body, idempotency_key)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return result


@api.get(
    "/notifications/{notification_id}", tags=["notifications"], responses=problem_responses(404)
)
async def status(notification_id: Name, service: NotificationsDep) -> NotificationRead:
    """Every delivery (user x channel) with its trail of attempts."""
    return await service.get(notification_id)


@api.post(
    "/notifications/{notification_id}/cancel",
    tags=["notifications"],
    responses={**WRITE, **problem_responses(404)},
)
async def cancel(notification_id: Name, service: NotificationsDep, _: AdminDep) -> Cancelled:
    """Cancel the deliveries still waiting (queued, deferred, in a digest)."""
    return Cancelled(id=notification_id, cancelled=await service.cancel(notification_id))


@api.get("/users/{user_id}/notifications", tags=["users"], responses=problem_responses(422))
async def user_notifications(
    user_id: Name, service: NotificationsDep, cursor: Cursor = None, limit: Limit = 50
) -> NotificationPage:
    items, next_cursor = await service.for_user(user_id, cursor, limit)
    return NotificationPage(items=items, next_cursor=next_cursor)


@api.put(
    "/users/{user_id}",
    tags=["users"],
    responses={**WRITE, 201: {"model": UserRead, "description": "Created"}},
)
async def put_user(
    user_id: Name, body: UserWrite, directory: DirectoryDep, _: AdminDep, response: Response
) -> UserRead:
    """Create or replace a user's addresses and time zone (201 when created)."""
    user, created = await directory.put_user(user_id, body)
    response.status_code = 201 if created else 200
    return user


@api.get("/users/{user_id}", tags=["users"], responses=problem_responses(404))
async def get_user(user_id: Name, directory: DirectoryDep) -> UserRead:
    return await directory.get_user(user_id)


@api.put(
    "/users/{user_id}/preferences", tags=["users"], responses={**WRITE, **problem_responses(404)}
)
async def put_preferences(
    user_id: Name, body: Preferences, directory: DirectoryDep, _: AdminDep
) -> Preferences:
    """Per category x channel on/off, quiet hours in the user's time zone, digest windows."""
    user = await directory.put_preferences(user_id, body)
    return Preferences.model_validate(user.preferences)


@api.get("/users/{user_id}/preferences", tags=["users"], responses=problem_responses(404))
async def get_preferences(user_id: Name, directory: DirectoryDep) -> Preferences:
    user = await directory.get_user(user_id)
    return Preferences.model_validate(user.preferences)


@api.post(
    "/topics/{topic}/subscribers", tags=["topics"], responses={**WRITE, **problem_responses(404)}
)
async def subscribe(
    topic: Name, body: Subscribe, directory: DirectoryDep, _: AdminDep
) -> Subscribers:
    return Subscribers(topic=topic, user_ids=await directory.subscribe(topic, body.user_ids))


@api.get("/topics/{topic}/subscribers", tags=["topics"])
async def subscribers(topic: Name, directory: DirectoryDep) -> Subscribers:
    return Subscribers(topic=topic, user_ids=await directory.subscribers(topic))


@api.delete(
    "/topics/{topic}/subscribers/{user_id}",
    status_code=204,
    tags=["topics"],
    responses={**WRITE, **problem_responses(404)},
)
async def unsubscribe(topic: Name, user_id: Name, directory: DirectoryDep, _: AdminDep) -> Response:
    await directory.unsubscribe(topic, user_id)
    return Response(status_code=204)


@api.put(
    "/templates/{name}",
    tags=["templates"],
    responses={
        **WRITE,
        **problem_responses(422),
        201: {"model": TemplateRead, "description": "A new version"},
    },
)
async def put_template(
    name: Name, body: TemplateWrite, directory: DirectoryDep, _: AdminDep, response: Response
) -> TemplateRead:
    """Save a new version (201); the same content again changes nothing (200). A variant
    that fails to render with `example` is refused (422)."""
    template, added = await directory.put_template(name, body)
    response.status_code = 201 if added else 200
    return template


@api.get("/templates/{name}", tags=["templates"], responses=problem_responses(404))
async def get_template(
    name: Name,
    directory: DirectoryDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> TemplateRead:
    return await directory.get_template(name, version)


@api.get("/templates/{name}/versions", tags=["templates"], responses=problem_responses(404))
async def template_versions(name: Name, directory: DirectoryDep) -> list[TemplateRead]:
    return await directory.versions(name)


@api.post("/templates/{name}/preview", tags=["templates"], responses=problem_responses(404, 422))
async def preview(name: Name, body: PreviewRequest, directory: DirectoryDep) -> Preview:
    """Render every variant with `data` (nothing is sent)."""
    return await directory.preview(name, body.data, body.version)


@api.get("/users/{user_id}/inbox", tags=["inbox"], responses=problem_responses(422))
async def inbox(
    user_id: Name,
    box: InboxDep,
    filter: Annotated[Filter, Query()] = "all",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> InboxPage:
    return await box.page(user_id, filter, cursor, limit)


@api.get("/users/{user_id}/inbox/unread-count", tags=["inbox"])
async def unread_count(user_id: Name, box: InboxDep) -> UnreadCount:
    return UnreadCount(unread=await box.unread(user_id))


@api.post(
    "/users/{user_id}/inbox/{item_id}/read",
    tags=["inbox"],
    responses={**WRITE, **problem_responses(404)},
)
async def mark_read(user_id: Name, item_id: ItemId, box: InboxDep, _: AdminDep) -> InboxItemRead:
    return await box.mark(user_id, item_id, "read")


@api.post(
    "/users/{user_id}/inbox/{item_id}/archive",
    tags=["inbox"],
    responses={**WRITE, **problem_responses(404)},
)
async def archive(user_id: Name, item_id: ItemId, box: InboxDep, _: AdminDep) -> InboxItemRead:
    return await box.mark(user_id, item_id, "archive")


@api.post("/users/{user_id}/inbox/read-all", tags=["inbox"], responses=WRITE)
async def read_all(user_id: Name, box: InboxDep, _: AdminDep) -> UnreadCount:
    await box.read_all(user_id)
    return UnreadCount(unread=await box.unread(user_id))


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


SSE_EXAMPLE = 'id: 7\nevent: notification\ndata: {"id": 7, "title": "Hi", ...}\n\n'


@api.get(
    "/users/{user_id}/inbox/stream",
    tags=["inbox"],
    response_class=EventStream,
    responses={
        **problem_responses(422),
        200: {
            "description": "Server-Sent Events: `event: notification` frames (`id:` is the "
            "item's id, `data:` its JSON), `: keep-alive` comments; the stream ends after "
            "NOTIFICATIONS_STREAM_LIFETIME_SECONDS and the client reconnects",
            "content": {
                "text/event-stream": {"schema": {"type": "string"}, "example": SSE_EXAMPLE}
            },
        },
    },
)
async def inbox_stream(
    user_id: Name,
    box: InboxDep,
    after: Annotated[int | None, Query(ge=0)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> EventStream:
    """New inbox items as Server-Sent Events (`event: notification`); on reconnect the
    browser's Last-Event-ID (or `after`) replays what was missed."""
    if after is None and last_event_id and last_event_id.isdigit():
        after = int(last_event_id)
    return EventStream(
        box.stream(user_id, after),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@api.get("/dead-letters", tags=["dead letters"])
async def dead_letters(service: NotificationsDep, limit: Limit = 100) -> DeadLetterPage:
    """Deliveries that exhausted their retries (dead) or failed permanently."""
    return DeadLetterPage(items=await service.dead_letters(limit))


@api.post(
    "/dead-letters/{delivery_id}/replay",
    status_code=202,
    tags=["dead letters"],
    responses={**WRITE, **problem_responses(404, 409)},
)
async def replay(delivery_id: Name, service: NotificationsDep, _: AdminDep) -> dict[str, str]:
    return {"id": await service.replay(delivery_id), "status": "queued"}


@api.get("/providers", tags=["providers"])
async def providers(view: ProvidersDep) -> list[ProviderRead]:
    """Each provider's circuit breaker as every worker sees it (state in Redis)."""
    return await view.list()
