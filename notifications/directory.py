"""Users, their preferences, topics and templates: the data notifications are sent from."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notifications import templates
from notifications.errors import NotFound
from notifications.schemas import (
    Preferences,
    Preview,
    TemplateRead,
    TemplateWrite,
    UserRead,
    UserWrite,
)
from notifications.store import Subscriber, Template, User


def user_read(user: User) -> UserRead:
    return UserRead(
        id=user.id,
        email=user.email,
        phone=user.phone,
        webhook_url=user.webhook_url,
        timezone=user.timezone,
        preferences=user.preferences or {},
    )


def template_read(t: Template) -> TemplateRead:
    return TemplateRead(
        name=t.name,
        version=t.version,
        variants=t.variants,
        example=t.example,
        created_at=t.created_at,
    )


class Directory:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def put_user(self, user_id: str, body: UserWrite) -> tuple[UserRead, bool]:
        now = time.time()
        async with self.sessions() as session, session.begin():
            user = await session.get(User, user_id)
            created = user is None
            if user is None:
                user = User(id=user_id, preferences={}, created_at=now)
                session.add(user)
            user.email, user.phone = body.email, body.phone
            user.webhook_url, user.timezone = body.webhook_url, body.timezone
            user.updated_at = now
        return user_read(user), created

    async def get_user(self, user_id: str) -> UserRead:
        async with self.sessions() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFound(f"no user {user_id}")
            return user_read(user)

    async def put_preferences(self, user_id: str, body: Preferences) -> UserRead:
        async with self.sessions() as session, session.begin():
            user = await session.get(User, user_id)
            if user is None:
                raise NotFound(f"no user {user_id}")
            user.preferences = body.model_dump(mode="json", exclude_none=True)
            user.updated_at = time.time()
        return user_read(user)

    async def subscribe(self, topic: str, user_ids: list[str]) -> list[str]:
        now = time.time()
        async with self.sessions() as session, session.begin():
            known = set(await session.scalars(select(User.id).where(User.id.in_(user_ids))))
            missing = sorted(set(user_ids) - known)
            if missing:
                raise NotFound(f"no such users: {', '.join(missing[:10])}")
            have = set(
                await session.scalars(
                    select(Subscriber.user_id).where(
                        Subscriber.topic == topic, Subscriber.user_id.in_(user_ids)
                    )
                )
            )
            for user_id in sorted(set(user_ids) - have):
                session.add(Subscriber(topic=topic, user_id=user_id, created_at=now))
        return await self.subscribers(topic)

    async def unsubscribe(self, topic: str, user_id: str) -> None:
        async with self.sessions() as session, session.begin():
            done = await session.execute(
                delete(Subscriber).where(Subscriber.topic == topic, Subscriber.user_id == user_id)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"{user_id} is not subscribed to {topic}")

    async def subscribers(self, topic: str) -> list[str]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Subscriber.user_id)
                .where(Subscriber.topic == topic)
                .order_by(Subscriber.user_id)
            )
            return list(rows)

    async def put_template(self, name: str, body: TemplateWrite) -> tuple[TemplateRead, bool]:
        """Save a new version (if the content changed); 422 if any variant fails to render
        with the example data. Returns (the current version, whether one was added)."""
        variants = {c: v.model_dump(exclude_none=True) for c, v in body.variants.items()}
        sample_user = {"id": "example", "email": None, "phone": None, "webhook_url": None}
        templates.render_all(variants, templates.context(body.example, sample_user))  # type: ignore[arg-type]
        for _ in range(3):
            async with self.sessions() as session:
                latest = await self._latest(session, name)
                if latest and latest.variants == variants and latest.example == body.example:
                    return template_read(latest), False
                row = Template(
                    name=name,
                    version=(latest.version + 1) if latest else 1,
                    variants=variants,
                    example=body.example,
                    created_at=time.time(),
                )
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:  # a concurrent PUT took this version number
                    await session.rollback()
                    continue
                return template_read(row), True
        raise RuntimeError("template version contention")

    async def _latest(self, session: AsyncSession, name: str) -> Template | None:
        return await session.scalar(
            select(Template).where(Template.name == name).order_by(Template.version.desc()).limit(1)
        )

    async def get_template(self, name: str, version: int | None = None) -> TemplateRead:
        async with self.sessions() as session:
            if version is None:
                t = await self._latest(session, name)
            else:
                t = await session.get(Template, (name, version))
            if t is None:
                raise NotFound(f"no template {name}" + (f" v{version}" if version else ""))
            return template_read(t)

    async def versions(self, name: str) -> list[TemplateRead]:
        async with self.sessions() as session:
            rows = list(
                await session.scalars(
                    select(Template).where(Template.name == name).order_by(Template.version)
                )
            )
        if not rows:
            raise NotFound(f"no template {name}")
        return [template_read(t) for t in rows]

    async def preview(self, name: str, data: dict[str, Any], version: int | None) -> Preview:
        t = await self.get_template(name, version)
        sample_user = {"id": "preview", "email": None, "phone": None, "webhook_url": None}
        rendered = templates.render_all(t.variants, templates.context(data, sample_user))
        return Preview(name=t.name, version=t.version, rendered=rendered)
