"""python -m notifications.sweeper: the safety net that makes "nothing is lost" true.

Every `sweep_interval_seconds` it hands out (enqueues) each delivery that is due and not
owned: deferred ones whose quiet hours, digest window, rate limit or backoff has passed,
and any whose enqueue or claim expired (a message lost with a restarted Redis, a worker
killed mid-send). Ownership is a lease in SQL, taken with a conditional UPDATE, so several
sweepers may run; a delivery handed out twice still runs once (the worker's claim)."""

from __future__ import annotations

import signal
import time
from typing import Any

import structlog
from celery import Celery
from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from common.celery import create_celery
from common.logging import configure_logging
from common.redis_server import ensure_shared_redis
from notifications.delivery import WAITING
from notifications.dispatch import enqueue
from notifications.settings import NotificationsSettings
from notifications.store import Attempt, Delivery
from notifications.syncdb import create_sync_engine

log = structlog.get_logger("notifications.sweeper")


def sweep(sessions: sessionmaker[Session], app: Celery, *, lease: float, limit: int = 500) -> int:
    """One pass: returns how many deliveries were handed out."""
    now = time.time()
    with sessions() as session:
        due = session.execute(
            select(
                Delivery.id,
                Delivery.channel,
                Delivery.priority,
                Delivery.status,
                Delivery.lease_until,
            )
            .where(Delivery.lease_until < now)
            .where(
                or_(
                    Delivery.status == "sending",
                    (Delivery.status.in_(WAITING)) & (Delivery.next_at <= now),
                )
            )
            .order_by(Delivery.next_at)
            .limit(limit)
        ).all()
    handed = 0
    for row in due:
        with sessions.begin() as session:
            values: dict[str, Any] = {"lease_until": now + lease}
            if row.status == "sending":  # its worker died mid-send: it goes out again
                values |= {"status": "retrying", "next_at": now}
            taken = session.execute(
                update(Delivery)
                .where(Delivery.id == row.id, Delivery.lease_until == row.lease_until)
                .where(Delivery.status == row.status)
                .values(**values)
            ).rowcount  # type: ignore[attr-defined]
            if taken and row.status == "sending":
                session.add(
                    Attempt(
                        delivery_id=row.id,
                        status="failed",
                        error="lost mid-send (worker died or timed out); handed out again",
                        at=now,
                    )
                )
        if taken:
            enqueue(app, row.id, row.channel, row.priority)
            handed += 1
    return handed


def run(settings: NotificationsSettings) -> None:
    configure_logging("notifications-sweeper", settings.log_level, settings.log_format)
    sessions = sessionmaker(create_sync_engine(settings.database()), expire_on_commit=False)
    app = create_celery(settings, name="notifications")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("sweeper_started", interval=settings.sweep_interval_seconds)
    while not stopping:
        try:
            handed = sweep(sessions, app, lease=settings.lease_seconds)
            if handed:
                log.info("handed_out", deliveries=handed)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("sweep_failed", error=str(exc)[:200])
        except Exception as exc:  # the broker down (kombu's errors): try again next pass
            log.warning("sweep_failed", error=f"{type(exc).__name__}: {exc}"[:200])
        time.sleep(settings.sweep_interval_seconds)
    app.close()


def main() -> None:
    settings = NotificationsSettings().checked()
    if not settings.redis_url:
        settings.redis_url = ensure_shared_redis(settings.data_dir)
    run(settings)


if __name__ == "__main__":
    main()
