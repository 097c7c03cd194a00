"""The in-app channel: a row in the user's inbox and a message on their Redis channel,
which every API instance's SSE streams of that user relay."""

from __future__ import annotations

import contextlib
import json
import time

import redis as sync_redis
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from notifications.channels import Message, Outcome, Result
from notifications.store import InboxItem


def inbox_channel(user_id: str) -> str:
    return f"notifications:inbox:{user_id}"


def item_json(item: InboxItem) -> dict[str, object]:
    return {
        "id": item.id,
        "notification_id": item.notification_id,
        "title": item.title,
        "body": item.body,
        "created_at": item.created_at,
        "read": item.read_at is not None,
        "archived": item.archived_at is not None,
    }


class InApp:
    name = "inapp"

    def circuit(self, message: Message) -> str:
        return self.name

    def __init__(self, sessions: sessionmaker[Session], redis: sync_redis.Redis) -> None:
        self.sessions, self.redis = sessions, redis

    def send(self, message: Message) -> Result:
        user_id = str(message.user["id"])
        item = InboxItem(
            user_id=user_id,
            delivery_id=message.delivery_id,
            notification_id=message.notification_id,
            title=message.content.get("title") or message.content.get("subject") or "",
            body=message.content.get("text", ""),
            created_at=time.time(),
        )
        try:
            with self.sessions.begin() as session:
                session.add(item)
        except IntegrityError:  # delivered before (a redelivery): the inbox has it once
            with self.sessions() as session:
                found = session.scalars(
                    select(InboxItem).where(InboxItem.delivery_id == message.delivery_id)
                ).one()
                item = found
        # The item is stored; a live stream that misses it catches up on reconnect.
        with contextlib.suppress(sync_redis.ConnectionError, sync_redis.TimeoutError):
            self.redis.publish(inbox_channel(user_id), json.dumps(item_json(item)))
        return Result(Outcome.DELIVERED, self.name)
