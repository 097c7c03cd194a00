"""Notifications: accept (idempotently), fan out to users and channels, report the trail,
cancel, and replay dead letters. Plain Python over the store; enqueueing is a callable."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifications import templates
from notifications.delivery import WAITING, user_json
from notifications.errors import (
    BadCursor,
    IdempotencyConflict,
    InvalidNotification,
    NotFound,
    NotReplayable,
)
from notifications.schemas import (
    AttemptRead,
    DeadLetter,
    DeliveryRead,
    NotificationCreate,
    NotificationRead,
)
from notifications.settings import CHANNELS, NotificationsSettings
from notifications.store import Attempt, Delivery, Notification, Subscriber, Template, User

Enqueue = Callable[[str, str, str], Awaitable[None]]  # (delivery id, channel, priority)
ADDRESS = {"email": "email", "sms": "phone", "webhook": "webhook_url"}
DEAD = ("dead", "failed")


def _request_hash(body: NotificationCreate) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _skip_reason(user: User, channel: str, category: str, critical: bool) -> str | None:
    field = ADDRESS.get(channel)
    if field and not getattr(user, field):
        return f"the user has no {field.replace('_', ' ')}"
    wanted = ((user.preferences or {}).get("channels") or {}).get(category, {}).get(channel, True)
    if not wanted and not critical:
        return f"opted out of {category} on {channel}"
    return None


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 10 or int(cursor) > 2**31 - 1:
        raise BadCursor("cursor must be one the API handed out")
    return int(cursor)


class NotificationService:
    def __init__(
        self,
        *,
        settings: NotificationsSettings,
        sessions: async_sessionmaker[AsyncSession],
        enqueue: Enqueue,
    ) -> None:
        self.settings, self.sessions, self.enqueue = settings, sessions, enqueue

    async def submit(
        self, body: NotificationCreate, idempotency_key: str | None
    ) -> tuple[NotificationRead, bool]:
        """Accept a notification; with a key already used, the first one's answer (created
        False). Two concurrent submits with one key: the unique index lets one row in."""
        digest = _request_hash(body)
        if idempotency_key:
            existing = await self._by_key(idempotency_key, digest)
            if existing is not None:
                return existing, False
        now = time.time()
        async with self.sessions() as session:
            template = await session.scalar(
                select(Template)
                .where(Template.name == body.template)
                .order_by(Template.version.desc())
                .limit(1)
            )
            if template is None:
                raise InvalidNotification(f"no template named {body.template}")
            users = await self._audience(session, body)
            sample = user_json(users[0]) if users else {"id": "", "timezone": "UTC"}
            templates.render_all(template.variants, templates.context(body.data, sample))
            notification = Notification(
                id=uuid.uuid4().hex,
                idempotency_key=idempotency_key,
                request_hash=digest,
                user_id=body.user_id,
                topic=body.topic,
                template=template.name,
                template_version=template.version,
                data=body.data,
                category=body.category,
                priority=body.priority,
                send_at=body.send_at.timestamp() if body.send_at else None,
                created_at=now,
            )
            session.add(notification)
            due = self._deliveries(session, notification, users, body, template, now)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                if idempotency_key:
                    existing = await self._by_key(idempotency_key, digest)
                    if existing is not None:
                        return existing, False
                raise
        for delivery_id, channel in due:
            try:
                await self.enqueue(delivery_id, channel, body.priority)
            except Exception:  # the broker is down: the sweeper hands it out after the lease
                break
        return await self.get(notification.id), True

    async def _by_key(self, key: str, digest: str) -> NotificationRead | None:
        async with self.sessions() as session:
            found = await session.scalar(
                select(Notification).where(Notification.idempotency_key == key)
            )
        if found is None:
            return None
        if found.request_hash != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used for a different request", notification=found.id
            )
        return await self.get(found.id)

    async def _audience(self, session: AsyncSession, body: NotificationCreate) -> list[User]:
        if body.user_id is not None:
            user = await session.get(User, body.user_id)
            if user is None:
                raise InvalidNotification(f"no user {body.user_id}: PUT /api/users/{{id}} first")
            return [user]
        ids = select(Subscriber.user_id).where(Subscriber.topic == body.topic)
        users = list(
            await session.scalars(
                select(User)
                .where(User.id.in_(ids))
                .order_by(User.id)
                .limit(self.settings.max_fanout + 1)
            )
        )
        if len(users) > self.settings.max_fanout:
            raise InvalidNotification(f"topic has more than {self.settings.max_fanout} users")
        return users

    def _deliveries(
        self,
        session: AsyncSession,
        n: Notification,
        users: Sequence[User],
        body: NotificationCreate,
        template: Template,
        now: float,
    ) -> list[tuple[str, str]]:
        """One delivery per user and channel; the ones that cannot go are cancelled with
        the reason (no address, opted out), so the trail says why nothing was sent."""
        own = [c for c in CHANNELS if c in template.variants]
        channels = body.channels or own or ["inapp"]
        start = n.send_at or now
        due = []
        for user in users:
            for channel in channels:
                reason = _skip_reason(user, channel, n.category, n.priority == "critical")
                if (
                    reason is None
                    and channel not in template.variants
                    and ("default" not in template.variants)
                ):
                    reason = f"template {template.name} has no {channel} variant"
                status = "cancelled" if reason else "queued"
                sendable = reason is None and start <= now
                d = Delivery(
                    id=uuid.uuid4().hex,
                    notification_id=n.id,
                    user_id=user.id,
                    channel=channel,
                    category=n.category,
                    priority=n.priority,
                    status=status,
                    attempts=0,
                    next_at=start,
                    lease_until=now + self.settings.lease_seconds if sendable else 0.0,
                    error=reason,
                    created_at=now,
                    updated_at=now,
                )
                session.add(d)
                session.add(Attempt(delivery_id=d.id, status=status, error=reason, at=now))
                if sendable:
                    due.append((d.id, channel))
        return due

    async def get(self, notification_id: str, user_id: str | None = None) -> NotificationRead:
        async with self.sessions() as session:
            n = await session.scalar(select(Notification).where(Notification.id == notification_id))
            if n is None:
                raise NotFound(f"no notification {notification_id}")
            return await self._read(session, n, user_id)

    async def _read(
        self, session: AsyncSession, n: Notification, user_id: str | None
    ) -> NotificationRead:
        query = select(Delivery).where(Delivery.notification_id == n.id)
        if user_id is not None:
            query = query.where(Delivery.user_id == user_id)
        deliveries = list(await session.scalars(query.order_by(Delivery.user_id, Delivery.channel)))
        trails: dict[str, list[AttemptRead]] = {d.id: [] for d in deliveries}
        if deliveries:
            rows = await session.scalars(
                select(Attempt).where(Attempt.delivery_id.in_(trails)).order_by(Attempt.id)
            )
            for a in rows:
                trails[a.delivery_id].append(
                    AttemptRead(status=a.status, at=a.at, provider=a.provider, error=a.error)
                )
        pending = any(d.status in (*WAITING, "sending") for d in deliveries)
        return NotificationRead(
            id=n.id,
            user_id=n.user_id,
            topic=n.topic,
            template=n.template,
            template_version=n.template_version,
            category=n.category,
            priority=n.priority,
            created_at=n.created_at,
            send_at=n.send_at,
            status="pending" if pending else "done",
            deliveries=[
                DeliveryRead(
                    id=d.id,
                    user_id=d.user_id,
                    channel=d.channel,
                    status=d.status,
                    provider=d.provider,
                    attempts=d.attempts,
                    next_at=d.next_at if d.status in WAITING else None,
                    error=d.error,
                    trail=trails[d.id],
                )
                for d in deliveries
            ],
        )

    async def for_user(
        self, user_id: str, cursor: str | None, limit: int
    ) -> tuple[list[NotificationRead], str | None]:
        """The user's notifications, newest first (their own deliveries only)."""
        before = decode_cursor(cursor)
        async with self.sessions() as session:
            ids = select(Delivery.notification_id).where(Delivery.user_id == user_id)
            query = select(Notification).where(Notification.id.in_(ids))
            if before is not None:
                query = query.where(Notification.seq < before)
            rows = list(
                await session.scalars(query.order_by(Notification.seq.desc()).limit(limit + 1))
            )
            page = rows[:limit]
            items = [await self._read(session, n, user_id) for n in page]
        return items, str(page[-1].seq) if len(rows) > limit else None

    async def cancel(self, notification_id: str) -> int:
        """Cancel every delivery still waiting; returns how many."""
        now = time.time()
        async with self.sessions() as session, session.begin():
            n = await session.scalar(select(Notification).where(Notification.id == notification_id))
            if n is None:
                raise NotFound(f"no notification {notification_id}")
            waiting = list(
                await session.scalars(
                    select(Delivery.id).where(
                        Delivery.notification_id == notification_id,
                        Delivery.status.in_(WAITING),
                    )
                )
            )
            count = 0
            for delivery_id in waiting:
                done = await session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery_id, Delivery.status.in_(WAITING))
                    .values(status="cancelled", error="cancelled by request", updated_at=now)
                )
                if done.rowcount:  # type: ignore[attr-defined]
                    count += 1
                    session.add(
                        Attempt(
                            delivery_id=delivery_id,
                            status="cancelled",
                            error="cancelled by request",
                            at=now,
                        )
                    )
        return count

    async def dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Delivery)
                .where(Delivery.status.in_(DEAD))
                .order_by(Delivery.updated_at.desc())
                .limit(limit)
            )
            return [
                DeadLetter(
                    id=d.id,
                    notification_id=d.notification_id,
                    user_id=d.user_id,
                    channel=d.channel,
                    status=d.status,
                    attempts=d.attempts,
                    error=d.error,
                    updated_at=d.updated_at,
                )
                for d in rows
            ]

    async def replay(self, delivery_id: str) -> str:
        """Send a dead or failed delivery again, from a fresh attempt count; its id."""
        now = time.time()
        async with self.sessions() as session, session.begin():
            d = await session.get(Delivery, delivery_id)
            if d is None:
                raise NotFound(f"no dead letter {delivery_id}")
            if d.status not in DEAD:
                raise NotReplayable(f"delivery {delivery_id} is {d.status}, not dead or failed")
            d.status, d.attempts, d.next_at = "queued", 0, now
            d.lease_until, d.updated_at = now + self.settings.lease_seconds, now
            session.add(Attempt(delivery_id=d.id, status="queued", error="replayed", at=now))
            channel, priority = d.channel, d.priority
        # The broker down: the sweeper hands it out after the lease.
        with contextlib.suppress(Exception):
            await self.enqueue(delivery_id, channel, priority)
        return delivery_id

    @staticmethod
    def channels_of(variants: dict[str, Any]) -> list[str]:
        return [c for c in CHANNELS if c in variants]
